"""The runner's object stores, built from a destination URL and the pod's environment.

Why from the environment: Kubernetes hands the runner its credentials as variables (from
the Secret the CleoBackup names) or as an identity (a projected ServiceAccount token for web
identity, the GKE or Azure metadata server, the node's instance metadata), and the
render side (`render.backup_identity`) decides which and says so in
``CLEO_OBJECT_STORE_AUTH`` (``secret``, ``web-identity``, ``workload`` or ``instance``).
Only the variables of that source are read, and they are passed to obstore explicitly:

- S3 (``s3://BUCKET/PREFIX?region=R&endpoint=URL``): ``secret``: ``AWS_ACCESS_KEY_ID`` and
  ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``); ``web-identity`` (IRSA):
  ``AWS_ROLE_ARN`` with ``AWS_WEB_IDENTITY_TOKEN_FILE`` (and ``AWS_ENDPOINT_URL_STS`` for a
  regional or private STS); ``instance``: the instance metadata service.
- GCS (``gs://BUCKET/PREFIX?endpoint=URL``): ``secret``: ``GOOGLE_SERVICE_ACCOUNT_KEY`` (a
  service account's JSON key); ``workload`` or ``instance``: the metadata server (GKE
  workload identity, or the node's service account).
- Azure (``azure://ACCOUNT/CONTAINER/PREFIX?endpoint=URL``): ``secret``:
  ``AZURE_STORAGE_ACCOUNT_KEY`` or ``AZURE_STORAGE_SAS_TOKEN``; ``workload``: workload
  identity (``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE``,
  ``AZURE_AUTHORITY_HOST``, which the Azure workload identity webhook sets); ``instance``:
  the managed identity of the instance.

Security notes (tenant admins write the credentials Secret, and choose the endpoint):

- obstore 0.12's constructors always read the process's ``AWS_*``, ``GOOGLE_*`` and
  ``AZURE_*`` variables under what is passed (there is no switch to turn that off). So a
  Secret's keys reach obstore as a ``credential_provider``, which object_store prefers to
  every other credential: an identity in the process's environment (the operator's
  workload identity, a session token) is never used for, nor sent to, a tenant's store;
- with ``secret``, a store without its keys is refused, naming the key: an empty value
  passes the kubelet, and obstore would otherwise fall back to the node's identity. The
  metadata endpoints point to an unresolvable name unless the source is ``instance``
  (GKE's ``workload`` needs its metadata server);
- a GCS key may not choose where requests go: obstore takes ``gcs_base_url`` (and
  ``disable_oauth``) from the key's JSON when no base URL is set, so the base URL is
  always set and a key with those (or any field that is not a service account key's) is
  refused (`service_account_key_problem`).

Credentials never show in reprs or messages: the stores' descriptions name the bucket and
the endpoint only, and a credential that obstore refuses is reported by `object_store`'s
safe messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

from obstore import exceptions as obstore_errors
from obstore.store import AzureStore, GCSStore, S3Store

from cleo_operator.api.backup import CleoBackupSpec
from cleo_operator.api.objects import KubeObject
from cleo_operator.backup.errors import StorageError
from cleo_operator.backup.object_store import ObjectStoreStorage, ReadLimits
from cleo_operator.kube.secrets import secret_value
from cleo_operator.render.backup_identity import (
    AUTH_ENV,
    AUTH_SOURCES,
    AZURE_SECRET_ENV,
    GCS_SECRET_ENV,
    GCS_SECRET_KEY,
    S3_ENV,
    S3_OPTIONAL_ENV,
    object_store_url,
)

if TYPE_CHECKING:
    from obstore.store import (
        AzureConfig,
        AzureCredential,
        ClientConfig,
        GCSConfig,
        ObjectStore,
        RetryConfig,
        S3Config,
        S3Credential,
    )

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
    "StaticCredentials",
    "auth_source",
    "azure_storage",
    "decoded_secret",
    "gcs_storage",
    "object_storage_from_url",
    "operator_storage",
    "s3_storage",
    "secret_environ",
    "service_account_key_problem",
]

S3_KEY_ENV: Final = S3_ENV
S3_WEB_IDENTITY_ENV: Final = ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")
S3_STS_ENDPOINT_ENV: Final = "AWS_ENDPOINT_URL_STS"
S3_SESSION_NAME_ENV: Final = "AWS_ROLE_SESSION_NAME"
GCS_KEY_ENV: Final = GCS_SECRET_ENV
GCS_DEFAULT_ENDPOINT: Final = "https://storage.googleapis.com"
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
NO_METADATA: Final = "http://metadata.invalid"
"""The metadata endpoint of a store whose source is not ``instance``: ``.invalid`` never
resolves (RFC 6761), so the node's identity cannot be reached by mistake."""

_KEY_FIELDS: Final = frozenset(
    {
        "type",
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "client_id",
        "auth_uri",
        "token_uri",
        "auth_provider_x509_cert_url",
        "client_x509_cert_url",
        "universe_domain",
    }
)
"""The fields of a service account key as Google issues it."""
_KEY_REDIRECTS: Final = ("gcs_base_url", "disable_oauth")
"""Fields obstore obeys that would choose where requests go, or send them unsigned."""
_GOOGLE_URL: Final = re.compile(
    r"https://(?:accounts\.google\.com|[a-z0-9.-]*\.googleapis\.com)/\S*"
)
_FIELD_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,64}")


def service_account_key_problem(text: str) -> str | None:
    """What makes `text` unfit as a GCS service account key (None: fit).

    The answer names fields, never values. Refused: not a JSON object, a ``type`` other
    than ``service_account``, a missing ``private_key`` or ``client_email``, the fields
    obstore would take as an endpoint or a switch off of signing (``gcs_base_url``,
    ``disable_oauth``), any field a Google key does not have, and URLs off Google's hosts.
    """
    try:
        key = json.loads(text)
    except ValueError:
        return "is not JSON (a service account's JSON key is expected)"
    if not isinstance(key, dict):
        return "is not a JSON object (a service account's JSON key is expected)"
    for name in _KEY_REDIRECTS:
        if name in key:
            return (
                f"has the field {name!r}, which would redirect the store's requests (or send "
                "them unsigned); a service account key from Google has no such field"
            )
    unknown = sorted(k for k in key if k not in _KEY_FIELDS)
    if unknown:
        shown = [k if _FIELD_NAME.fullmatch(str(k)) else "(a field)" for k in unknown]
        return f"has field(s) {shown} that a service account key does not have"
    if key.get("type") != "service_account":
        return "has a field 'type' other than \"service_account\""
    for name in ("private_key", "client_email"):
        if not isinstance(key.get(name), str) or not key[name]:
            return f"lacks the field {name!r}"
    for name, value in key.items():
        if name.endswith(("_uri", "_url")) and not (
            isinstance(value, str) and _GOOGLE_URL.fullmatch(value)
        ):
            return f"has a field {name!r} that is not a Google URL"
    if key.get("universe_domain", "googleapis.com") != "googleapis.com":
        return "has a field 'universe_domain' other than googleapis.com"
    return None


def auth_source(environ: Mapping[str, str], *, inferred: str) -> str:
    """The credential source the runner's pod declares (``CLEO_OBJECT_STORE_AUTH``);
    without it (a person's shell), the one `inferred` from the variables present."""
    source = environ.get(AUTH_ENV, "") or inferred
    if source not in AUTH_SOURCES:
        raise ValueError(f"{AUTH_ENV}={source!r}: use one of {', '.join(AUTH_SOURCES)}")
    return source


def _client(
    endpoint: str | None, environ: Mapping[str, str], limits: ReadLimits | None
) -> ClientConfig:
    options: ClientConfig = {
        "timeout": REQUEST_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "connect_timeout": "10s",
    }
    if limits is not None:
        timeouts = limits.client_timeouts()
        options["timeout"] = timeouts["timeout"]
        options["read_timeout"] = timeouts["read_timeout"]
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


def _retries(limits: ReadLimits | None) -> RetryConfig | None:
    """Retries end within one request's bound for the operator (None: obstore's)."""
    if limits is None:
        return None
    return {"max_retries": 2, "retry_timeout": timedelta(seconds=limits.request_seconds)}


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


def _built(
    make: Callable[..., ObjectStore],
    where: tuple[str, str, str],
    config: Mapping[str, Any],
    settings: tuple[str | None, Mapping[str, str], ReadLimits | None],
    provider: StaticCredentials | None = None,
) -> ObjectStoreStorage:
    """The store `make` builds, as storage. `where`: the bucket (or container), prefix and
    description; `settings`: the endpoint, variables and limits. A store obstore refuses
    is a ValueError without obstore's text."""
    location, prefix, description = where
    endpoint, environ, limits = settings
    variables = {"S3Store": "the AWS_* variables", "GCSStore": GCS_KEY_ENV}.get(
        getattr(make, "__name__", ""), "the AZURE_* variables"
    )
    extra: dict[str, Any] = {} if provider is None else {"credential_provider": provider}
    try:
        store = make(
            location,
            prefix=prefix or None,
            config=config,
            client_options=_client(endpoint, environ, limits),
            retry_config=_retries(limits),
            **extra,
        )
    except Exception as error:
        raise _refused(error, description=description, variables=variables) from None
    return ObjectStoreStorage(store, description=description, limits=limits)


def _lacking(environ: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not environ.get(name)]


def s3_storage(
    *,
    bucket: str,
    prefix: str = "",
    region: str | None = None,
    endpoint: str | None = None,
    environ: Mapping[str, str],
    limits: ReadLimits | None = None,
) -> ObjectStoreStorage:
    """An S3 bucket (see the module docstring for the credentials read from `environ`)."""
    prefix = prefix.strip("/")
    config: S3Config = {"region": region or "us-east-1", "skip_signature": False}
    if endpoint:
        config["endpoint"] = endpoint
        # S3-compatible stores (and moto) address buckets by path.
        config["virtual_hosted_style_request"] = False
    keys = [environ.get(k, "") for k in (*S3_KEY_ENV, *S3_WEB_IDENTITY_ENV)]
    source = auth_source(
        environ,
        inferred="secret" if any(keys[:2]) else "web-identity" if any(keys[2:]) else "instance",
    )
    provider: StaticCredentials | None = None
    if source == "secret":
        lacking = _lacking(environ, S3_KEY_ENV)
        if lacking:
            raise ValueError(
                f"S3 credentials incomplete: {' and '.join(lacking)} empty or missing (keys "
                "of the Secret named by spec.destination.s3.credentialsSecret)"
            )
        provider = StaticCredentials(
            {
                "access_key_id": environ[S3_KEY_ENV[0]],
                "secret_access_key": environ[S3_KEY_ENV[1]],
                "token": environ.get(S3_OPTIONAL_ENV[0]) or None,
                "expires_at": None,
            }
        )
    elif source == "web-identity":
        lacking = _lacking(environ, S3_WEB_IDENTITY_ENV)
        if lacking:
            raise ValueError(
                f"S3 web identity incomplete: {' and '.join(lacking)} empty or missing "
                "(spec.destination.s3.workloadIdentity)"
            )
        config["role_arn"] = environ[S3_WEB_IDENTITY_ENV[0]]
        config["web_identity_token_file"] = environ[S3_WEB_IDENTITY_ENV[1]]
        config["role_session_name"] = environ.get(S3_SESSION_NAME_ENV) or "cleo-backup"
        if environ.get(S3_STS_ENDPOINT_ENV):
            # obstore's stubs lack this key of object_store's (AmazonS3ConfigKey::StsEndpoint).
            sts: dict[str, str] = {"aws_endpoint_url_sts": environ[S3_STS_ENDPOINT_ENV]}
            config.update(sts)  # type: ignore[typeddict-item]
    elif source != "instance":
        raise ValueError(f"{AUTH_ENV}={source}: S3 takes secret, web-identity or instance")
    if source != "instance":
        config["metadata_endpoint"] = NO_METADATA
    description = _where(
        "S3 bucket", bucket, prefix, endpoint or f"https://s3.{config['region']}.amazonaws.com"
    )
    settings = (endpoint, environ, limits)
    return _built(S3Store, (bucket, prefix, description), config, settings, provider)


def gcs_storage(
    *,
    bucket: str,
    prefix: str = "",
    endpoint: str | None = None,
    environ: Mapping[str, str],
    limits: ReadLimits | None = None,
) -> ObjectStoreStorage:
    """A Google Cloud Storage bucket (credentials: see the module docstring)."""
    prefix = prefix.strip("/")
    # Always set: without it obstore would take the key's gcs_base_url.
    config: GCSConfig = {"base_url": endpoint or GCS_DEFAULT_ENDPOINT, "skip_signature": False}
    key = environ.get(GCS_KEY_ENV, "")
    source = auth_source(environ, inferred="secret" if key else "instance")
    if source == "secret":
        if not key:
            raise ValueError(
                f"GCS credentials incomplete: {GCS_KEY_ENV} empty or missing (key "
                f"{GCS_SECRET_KEY} of the Secret named by spec.destination.gcs."
                "credentialsSecret)"
            )
        problem = service_account_key_problem(key)
        if problem is not None:
            raise ValueError(f"GCS credentials: {GCS_KEY_ENV} {problem}")
        config["service_account_key"] = key
    elif source not in ("workload", "instance"):
        raise ValueError(f"{AUTH_ENV}={source}: GCS takes secret, workload or instance")
    description = _where("GCS bucket", bucket, prefix, endpoint)
    return _built(GCSStore, (bucket, prefix, description), config, (endpoint, environ, limits))


def azure_storage(
    *,
    account: str,
    container: str,
    prefix: str = "",
    endpoint: str | None = None,
    environ: Mapping[str, str],
    limits: ReadLimits | None = None,
) -> ObjectStoreStorage:
    """An Azure Blob container of a storage account (credentials: see the module docstring)."""
    prefix = prefix.strip("/")
    config: AzureConfig = {"account_name": account, "skip_signature": False}
    if endpoint:
        config["endpoint"] = endpoint
    key, sas = environ.get(AZURE_KEY_ENV, ""), environ.get(AZURE_SAS_ENV, "")
    source = auth_source(
        environ,
        inferred="secret"
        if key or sas
        else "workload"
        if environ.get("AZURE_FEDERATED_TOKEN_FILE")
        else "instance",
    )
    provider: StaticCredentials | None = None
    if source == "secret":
        if bool(key) == bool(sas):
            raise ValueError(
                f"Azure credentials: set {AZURE_KEY_ENV} or {AZURE_SAS_ENV} (keys of the "
                "Secret named by spec.destination.azure.credentialsSecret), "
                + ("not both" if key else "neither is set or both are empty")
            )
        credential: AzureCredential = (
            {"access_key": key, "expires_at": None}
            if key
            else {"sas_token": sas, "expires_at": None}
        )
        provider = StaticCredentials(credential)
    elif source == "workload":
        names = ("client_id", "tenant_id", "federated_token_file", "authority_host")
        for name, variable in zip(names, AZURE_WORKLOAD_ENV, strict=True):
            if environ.get(variable):
                config[name] = environ[variable]  # type: ignore[literal-required]
    elif source != "instance":
        raise ValueError(f"{AUTH_ENV}={source}: Azure takes secret, workload or instance")
    if source != "instance":
        config["msi_endpoint"] = NO_METADATA
    description = _where(
        "Azure container",
        f"{account}/{container}",
        prefix,
        endpoint or f"https://{account}.blob.core.windows.net",
    )
    settings = (endpoint, environ, limits)
    return _built(AzureStore, (container, prefix, description), config, settings, provider)


class StaticCredentials:
    """A credential as obstore's ``credential_provider``: object_store prefers it to every
    credential of the process's environment (see the module docstring). Never shown."""

    def __init__(self, credential: S3Credential | AzureCredential) -> None:
        self._credential = credential

    def __repr__(self) -> str:
        return "StaticCredentials(...)"

    def __call__(self) -> Any:
        return dict(self._credential)


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
    destination: str, *, environ: Mapping[str, str], limits: ReadLimits | None = None
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
            limits=limits,
        )
    if parts.scheme == "gs":
        options = _options(destination, parts.query, {"endpoint"})
        return gcs_storage(
            bucket=parts.hostname,
            prefix=parts.path,
            endpoint=options.get("endpoint"),
            environ=environ,
            limits=limits,
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
        limits=limits,
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
        values = {k: data[k] for k in (*S3_KEY_ENV, *S3_OPTIONAL_ENV) if data.get(k)}
    elif block == "gcs":
        if not data.get(GCS_SECRET_KEY):
            raise CredentialsUnavailable(missing, f"{where} lacks {GCS_SECRET_KEY}")
        problem = service_account_key_problem(data[GCS_SECRET_KEY])
        if problem is not None:
            raise CredentialsUnavailable(
                "CredentialsInvalid", f"{where}: {GCS_SECRET_KEY} {problem}"
            )
        values = {GCS_KEY_ENV: data[GCS_SECRET_KEY]}
    else:
        values = {k: data[k] for k in AZURE_SECRET_ENV if data.get(k)}
        if len(values) != 1:
            raise CredentialsUnavailable(
                missing,
                f"{where} must hold exactly one of {' or '.join(AZURE_SECRET_ENV)}",
            )
    return {AUTH_ENV: "secret", **values}


def operator_storage(
    spec: CleoBackupSpec,
    secret: KubeObject | None,
    *,
    environ: Mapping[str, str],
    limits: ReadLimits | None = None,
) -> ObjectStoreStorage:
    """The object store of a CleoBackup as the operator reads it (verification, drills):
    with its credentials Secret (`secret`, as read from the API; None when missing), never
    with an identity of the operator's own (see the module docstring), and within `limits`
    (default: `ReadLimits()`). `environ` may add the operator's CLEO_OBJECT_STORE_CA_FILE."""
    url = object_store_url(spec)
    namespace = str((secret or {}).get("metadata", {}).get("namespace", ""))
    values = secret_environ(spec, decoded_secret(secret), namespace=namespace)
    if environ.get(CA_FILE_ENV):
        values[CA_FILE_ENV] = environ[CA_FILE_ENV]
    assert url is not None  # secret_environ refused a volume
    try:
        store = object_storage_from_url(url, environ=values, limits=limits or ReadLimits())
    except ValueError as error:
        raise CredentialsUnavailable("CredentialsInvalid", str(error)) from None
    assert store is not None
    return store

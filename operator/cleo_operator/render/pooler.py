"""The tenant's PgBouncer pool: its configuration Secret, Deployment, Service and PDB.

Pure: from the site's connection facts, the tenant's name, its password and
``spec.database.pooler`` to objects and file contents; no I/O.

Choices, and why:

- **Two credentials: the role's, for the server, and the clients' own, for the pooler.**
  PgBouncer logs in to the server as the tenant's role (never the site's admin) with the
  role's password in its database entry, and authenticates its clients with SCRAM against
  the auth file, which holds a client password of the pooler's own
  (`CLIENT_PASSWORD_KEY`). A rotation of the role's password changes the first only: it
  rolls the pooler, while the workload keeps its URL and never restarts for it, so new
  workload pods never meet old pooler pods with another password (or the reverse). The
  alternative, the role's SCRAM verifier, would spare the pooler the plaintext, but
  PgBouncer can pass SCRAM through to the server only when its verifier is the *very*
  one the server stores (same salt and iteration count), and the server's copy is readable
  only by a superuser (``pg_authid``), which a site run with a lesser admin does not give
  the operator; the operator computes a fresh salt at each rotation and keeps no copy. The
  plaintext costs nothing in exposure: whoever can read the pooler's Secret (the tenant's
  admins, the operator) can already read the credentials Secret with the same password.
- **Every value in the files comes from the operator**, never from a tenant-writable
  object: the host, port and TLS settings from the site configuration, the role and
  database names from the tenant's name, the password from the credentials Secret only
  after the operator's own checks (and refused here if it holds a quote's escape or a
  control character, which could otherwise forge a second line of the auth file).
- **TLS to the site as the site is configured**: ``server_tls_sslmode`` is the site's
  ``sslMode``; a site with a CA of its own gets it as ``ca.crt`` in the Secret
  (``server_tls_ca_file``), a ``verify-full`` site without one uses the image's system
  bundle. Clients reach the pooler over TLS (``client_tls_sslmode=require``) with the
  pooler's own self-signed certificate (`crypto.pooler_tls`), which the operator's login
  check pins and the workload verifies (``sslmode=verify-full``: the certificate, mounted
  from the pooler's Secret as its only root, `CLIENT_CA_KEY`, names the host it connects
  to).
- **Fully qualified host names** (`pooler_host`): the workload's host for the pooler is
  ``cleo-pooler.<ns>.svc.<cluster domain>`` under the configured cluster domain, never the
  relative ``cleo-pooler``, which the pod's search list resolves to whatever Service of
  that name is nearest (one a tenant made, or one in a namespace named ``svc``). Tried
  under the search list first (it has fewer dots than ``ndots:5``), it is a name the
  cluster's DNS refuses to answer (``<name>.<ns>.svc.<domain>.<ns2>.svc.<domain>`` has
  too many labels for a Service or endpoint), so only the real Service answers. No trailing
  dot: the certificate kept from before names this form already (a new name would reissue
  it, and new workload pods would meet pooler pods of the old certificate during the roll).
- **A hash of the configuration on the pod template** (`POOLER_HASH_ANNOTATION`, an HMAC
  keyed with the password, which reveals nothing of it): a new password, a new site or a
  new pool setting rolls the pooler's pods, which read their files once at start.
- The pods run Pod Security ``restricted`` with a read-only root filesystem: PgBouncer
  needs no writable path (no pidfile, no unix socket, logs on stderr). Readiness and
  liveness are TCP checks of PgBouncer's port; whether it really reaches the server is
  the operator's own check behind ``PoolerReady``, a login through the Service.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from cleo_operator.api.base import ResourceList
from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.pooler import PoolerSpec
from cleo_operator.core.errors import CleoError
from cleo_operator.crypto.pooler_tls import PoolerTls
from cleo_operator.data.scram import is_operator_password
from cleo_operator.data.sites import CA_KEY, SiteConfig
from cleo_operator.render.child import (
    APP_NAME_LABEL,
    COMPONENT_LABEL,
    child_metadata,
    opaque_secret,
    restricted_container_security,
    restricted_pod_security,
    sorted_map,
)
from cleo_operator.render.k8s import ObjectMeta, Volume, VolumeMount
from cleo_operator.render.meta import TENANT_LABEL

__all__ = [
    "CLIENT_CA_DIR",
    "CLIENT_CA_KEY",
    "CLIENT_CA_PATH",
    "CLIENT_CA_VOLUME",
    "CLIENT_HOST_KEY",
    "CLIENT_PASSWORD_KEY",
    "CLIENT_ROTATION_ANNOTATION",
    "CLIENT_SSLMODE",
    "CLIENT_URL_KEY",
    "CONFIG_DIR",
    "DATABASE_ROUTE_LABEL",
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_POOLER_IMAGE",
    "INI_KEY",
    "NEXT_TLS_CERT",
    "NEXT_TLS_KEY",
    "POOLER_HASH_ANNOTATION",
    "POOLER_NAME",
    "POOLER_PORT",
    "POOLER_ROUTE",
    "SERVICE_PORT",
    "SYSTEM_CA_BUNDLE",
    "TLS_CERT",
    "TLS_KEY",
    "USERLIST_KEY",
    "PoolerConfigError",
    "PoolerImage",
    "PoolerTarget",
    "pooler_ca_mount",
    "pooler_ca_volume",
    "pooler_client_fingerprint",
    "pooler_client_url",
    "pooler_config_hash",
    "pooler_config_values",
    "pooler_env",
    "pooler_host",
    "pooler_selector",
    "pooler_server_host",
    "render_pgbouncer_ini",
    "render_pooler",
    "render_userlist",
    "userlist_password",
]

POOLER_NAME: Final = "cleo-pooler"
"""Name of the pooler's Deployment, Service, PDB and configuration Secret (``cleo-`` is
reserved: a tenant's sealed secret cannot take the name)."""
POOLER_PORT: Final = 6432
"""PgBouncer's port in the pod."""
SERVICE_PORT: Final = 5432
"""The Service's port: clients see PostgreSQL's usual port."""
INI_KEY: Final = "pgbouncer.ini"
USERLIST_KEY: Final = "userlist.txt"
CLIENT_PASSWORD_KEY: Final = "CLIENT_PASSWORD"  # noqa: S105 - a key name, not a password
"""The workload's own credential to the pooler (kept across reconciles and rotations of
the role's password; only the operator reads it back)."""
TLS_KEY: Final = "tls.key"
TLS_CERT: Final = "tls.crt"
NEXT_TLS_KEY: Final = "next-tls.key"
NEXT_TLS_CERT: Final = "next-tls.crt"
"""The next pair, staged before the pooler presents it (`crypto.pooler_tls.TlsState`); the
pooler's pods do not mount it."""
"""The pooler's own key and self-signed certificate for client TLS (`crypto.pooler_tls`)."""
CLIENT_HOST_KEY: Final = "PGHOST"
"""The workload's host for the pooler (`pooler_host`), read with ``secretKeyRef``."""
CLIENT_CA_KEY: Final = "client-ca.crt"
"""The pooler's certificate as the workload's only trust anchor for it (mounted at
`CLIENT_CA_PATH`); ``ca.crt`` is the site's CA, for the pooler's own server login."""
CLIENT_CA_VOLUME: Final = "pooler-ca"
CLIENT_CA_DIR: Final = "/etc/cleo/pooler-ca"
CLIENT_CA_PATH: Final = f"{CLIENT_CA_DIR}/ca.crt"
DEFAULT_CLUSTER_DOMAIN: Final = "cluster.local"
CLIENT_URL_KEY: Final = "DATABASE_URL"
"""The workload's DATABASE_URL through the pooler (read with ``secretKeyRef``; the pooler's
pods do not mount it)."""
CONFIG_DIR: Final = "/etc/pgbouncer"
SYSTEM_CA_BUNDLE: Final = "/etc/ssl/certs/ca-certificates.crt"
"""The image's system CAs (Debian's path) for a ``verify-full`` site without a CA of its own."""
CLIENT_SSLMODE: Final = "verify-full"
"""How the workload connects to the pooler: TLS always (the pooler refuses plain clients),
verifying the pooler's own self-signed certificate (`CLIENT_CA_PATH`) and that it names
the host (`pooler_host`)."""
POOLER_HASH_ANNOTATION: Final = "cleoai.io/pooler-config-hash"
CLIENT_ROTATION_ANNOTATION: Final = "cleoai.io/pooler-client-credential"
"""On the pooler's Secret: what the workload's client credential answers to (no secret):
``request:<the password-rotation request handled when it was made>``, or
``inherited:<rotatedAt of the role's password>`` for a credential kept from an operator
before the client credential (the role's password then), replaced at the next rotation."""
DATABASE_ROUTE_LABEL: Final = "cleoai.io/database-route"
"""On the workload's pods that go through the pooler (value `POOLER_ROUTE`): the
NetworkPolicy that lets pods reach the site directly leaves them out."""
POOLER_ROUTE: Final = "pooler"
DEFAULT_POOLER_IMAGE: Final = "ghcr.io/cloudnative-pg/pgbouncer:1.24.1"
"""A public PgBouncer image with a pinned tag (the chart's ``pooler.image``)."""
RUN_AS_ID: Final = 10002
"""PgBouncer needs no particular user: it only reads its files (group-readable)."""
_HASH_CONTEXT: Final = b"cleo-operator pooler config v1\n"
_NOT_HASHED: Final = frozenset({CLIENT_CA_KEY, NEXT_TLS_KEY, NEXT_TLS_CERT})
_DEFAULT_REQUESTS: Final = {"cpu": "50m", "memory": "32Mi"}
_DEFAULT_LIMITS: Final = {"memory": "128Mi"}
_ANTI_AFFINITY_WEIGHT: Final = 100


class PoolerConfigError(CleoError, reason="PoolerConfigInvalid", retryable=False):
    """The pooler's configuration cannot be written from what is there (never retried)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolerImage:
    """The PgBouncer image every tenant's pooler runs (an operator setting)."""

    image: str = DEFAULT_POOLER_IMAGE
    pull_policy: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolerTarget:
    """Where the pooler connects: the tenant's database on its site, as the site says."""

    host: str
    port: int
    dbname: str
    user: str
    sslmode: str
    ca_pem: str | None
    """The site's own CA (PEM), or None (a weak sslMode, or the system's CAs)."""
    verifies_server: bool


def _check_password(password: str) -> None:
    # Only the operator's own form (43 URL-safe characters): PgBouncer reads a
    # "SCRAM-SHA-256$<iterations>:..." or "md5..." entry as a verifier, and a planted
    # iteration count is a CPU bomb in every client's connect; and a '"', a newline or a
    # control character could end the auth file's entry and start another.
    if not is_operator_password(password):
        raise PoolerConfigError(
            "the tenant's password cannot go into the pooler's auth file: it is not of the "
            "form the operator makes (43 URL-safe characters); rotate it"
        )


def userlist_password(userlist: str | None, *, user: str) -> str | None:
    """`user`'s password in an auth file the operator wrote (`render_userlist`), if it is of
    the operator's form; None otherwise (a verifier, another user, not one line)."""
    lines = (userlist or "").splitlines()
    if len(lines) != 1:
        return None
    prefix = f'"{user}" "'
    line = lines[0]
    if not (line.startswith(prefix) and line.endswith('"')):
        return None
    password = line[len(prefix) : -1]
    return password if is_operator_password(password) else None


def render_userlist(*, user: str, password: str) -> str:
    """PgBouncer's auth file: the tenant's role and its clients' password, one line."""
    _check_password(password)
    return f'"{user}" "{password}"\n'


def render_pgbouncer_ini(
    *,
    target: PoolerTarget,
    pooler: PoolerSpec,
    password: str,
    client_tls: bool = False,
    plain_clients: bool = False,
    config_dir: str = CONFIG_DIR,
    listen_addr: str = "*",
    listen_port: int = POOLER_PORT,
) -> str:
    """``pgbouncer.ini`` for `target` and `pooler`; `config_dir` holds the auth file and CA.

    Only the tenant's database is served (no wildcard entry, no admin console users): a
    client can reach nothing through the pooler that the role cannot reach directly. The
    server login is the role's, with its `password` in the database entry (a forced user):
    the clients' own credential, in the auth file, is another one.
    """
    _check_password(password)
    db_line = (
        f"{target.dbname} = host={target.host} port={target.port} dbname={target.dbname} "
        f"user={target.user} password={password}"
    )
    settings: dict[str, str] = {
        "listen_addr": listen_addr,
        "listen_port": str(listen_port),
        "unix_socket_dir": "",
        "auth_type": "scram-sha-256",
        "auth_file": f"{config_dir}/{USERLIST_KEY}",
        "pool_mode": pooler.mode,
        "default_pool_size": str(pooler.pool_size),
        "min_pool_size": "0",
        "reserve_pool_size": "0",
        # Hard caps besides the pool's own size: the server never sees more than this
        # from one pooler process, whatever the clients do.
        "max_db_connections": str(pooler.pool_size),
        "max_user_connections": str(pooler.pool_size),
        "max_client_conn": str(pooler.max_client_connections),
        "server_tls_sslmode": target.sslmode,
        # Clients (JDBC, some ORMs) send it at startup; PgBouncer would refuse them.
        "ignore_startup_parameters": "extra_float_digits",
        "server_login_retry": "2",
        "log_connections": "0",
        "log_disconnections": "0",
        "admin_users": "",
        "stats_users": "",
    }
    if client_tls:
        # Clients must come over TLS: the pod network is not trusted with the queries;
        # except while workload pods of an operator before client TLS still run (they
        # connect in the clear): `plain_clients` lets them in until they are gone.
        settings["client_tls_sslmode"] = "allow" if plain_clients else "require"
        settings["client_tls_key_file"] = f"{config_dir}/{TLS_KEY}"
        settings["client_tls_cert_file"] = f"{config_dir}/{TLS_CERT}"
    if target.ca_pem is not None:
        settings["server_tls_ca_file"] = f"{config_dir}/{CA_KEY}"
    elif target.verifies_server:
        settings["server_tls_ca_file"] = SYSTEM_CA_BUNDLE
    lines = ["[databases]", db_line, "", "[pgbouncer]"]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def pooler_server_host(
    site: SiteConfig, *, operator_namespace: str | None, cluster_domain: str
) -> str:
    """The site's host as the pooler must write it: what the operator's own pod reaches.

    The pooler's pod resolves names through the *tenant* namespace's search list, where a
    relative cluster name means something else: ``pg`` is first ``pg.<tenant ns>.svc...``
    (a Service any tenant admin can make) and ``pg.db.svc`` is tried under the tenant's
    zones too. So a single label is qualified as the operator's own pod resolves it (its
    namespace, ``<ns>.svc.<cluster domain>``) and a name ending in ``.svc`` gets the
    cluster domain. Left as configured: addresses, names with a trailing dot, other
    dotted names, and every name of a ``verify-full`` site, whose certificate must name
    the host as written and which no capturing server can present anyway.
    """
    host = site.host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    if site.sslmode == "verify-full" or host.endswith("."):
        return host
    domain = cluster_domain.strip(".")
    labels = host.split(".")
    if len(labels) == 1 and operator_namespace:
        return f"{host}.{operator_namespace}.svc.{domain}"
    if labels[-1] == "svc":
        return f"{host}.{domain}"
    return host


def pooler_host(namespace: str, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
    """The pooler Service's fully qualified name: ``cleo-pooler.<ns>.svc.<cluster domain>``."""
    return f"{POOLER_NAME}.{namespace}.svc.{cluster_domain.strip('.')}"


def pooler_client_url(*, target: PoolerTarget, password: str, host: str, tls: bool = False) -> str:
    """The workload's ``DATABASE_URL`` through the pooler's Service (holds the password)."""
    user = quote(target.user, safe="")
    database = quote(target.dbname, safe="")
    secret = quote(password, safe="")
    query = f"sslmode={CLIENT_SSLMODE}&sslrootcert={CLIENT_CA_PATH}" if tls else "sslmode=disable"
    return f"postgresql://{user}:{secret}@{host}:{SERVICE_PORT}/{database}?{query}"


def pooler_env(pooler_secret: str) -> list[dict[str, Any]]:
    """The workload container's variables that send libpq clients through the pooler.

    Explicit ``env`` entries win over every ``envFrom`` source, so the database Secret
    stays as it is (direct, for migration and backup Jobs) while the workload's pods get
    the pooler. ``DATABASE_URL`` holds the password: it is read from the pooler's Secret,
    never written into the Deployment, which viewers can read. So is ``PGPASSWORD``: the
    pooler's client credential, not the role's password the database Secret holds (the
    pooler accepts only the former). ``PGHOST`` is the Service's fully qualified name
    (`pooler_host`, from the Secret); ``PGSSLROOTCERT`` the pooler's own certificate
    (`pooler_ca_volume`, mounted at `CLIENT_CA_PATH`), not the database Secret's site CA,
    and ``PGSSLMODE`` ``verify-full``.
    """
    return [
        {
            "name": "DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": pooler_secret, "key": CLIENT_URL_KEY}},
        },
        {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": {"name": pooler_secret, "key": CLIENT_PASSWORD_KEY}},
        },
        {
            "name": "PGHOST",
            "valueFrom": {"secretKeyRef": {"name": pooler_secret, "key": CLIENT_HOST_KEY}},
        },
        {"name": "PGPORT", "value": str(SERVICE_PORT)},
        {"name": "PGSSLMODE", "value": CLIENT_SSLMODE},
        {"name": "PGSSLROOTCERT", "value": CLIENT_CA_PATH},
    ]


def pooler_ca_volume(pooler_secret: str) -> Volume:
    """The workload's volume with the pooler's certificate (`CLIENT_CA_KEY` as ``ca.crt``)."""
    return {
        "name": CLIENT_CA_VOLUME,
        "secret": {
            "secretName": pooler_secret,
            "items": [{"key": CLIENT_CA_KEY, "path": "ca.crt"}],
            "defaultMode": 0o444,
        },
    }


def pooler_ca_mount() -> VolumeMount:
    """Where the workload's container sees `pooler_ca_volume` (`CLIENT_CA_DIR`)."""
    return {"name": CLIENT_CA_VOLUME, "mountPath": CLIENT_CA_DIR, "readOnly": True}


def pooler_config_values(
    *,
    target: PoolerTarget,
    pooler: PoolerSpec,
    password: str,
    namespace: str,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    client_password: str | None = None,
    tls: PoolerTls | None = None,
    staged_tls: PoolerTls | None = None,
    trusted_certs: str | None = None,
    plain_clients: bool = False,
) -> dict[str, str]:
    """What the pooler's Secret holds, in plain text: the files and the client URL.

    `password` is the role's (the pooler's login to the server); `client_password` the
    workload's credential to the pooler (`CLIENT_PASSWORD_KEY`), the role's when None.
    The workload's host is the Service's fully qualified name in `namespace` (`pooler_host`).
    """
    client = password if client_password is None else client_password
    host = pooler_host(namespace, cluster_domain)
    values = {
        INI_KEY: render_pgbouncer_ini(
            target=target,
            pooler=pooler,
            password=password,
            client_tls=tls is not None,
            plain_clients=plain_clients,
        ),
        USERLIST_KEY: render_userlist(user=target.user, password=client),
        CLIENT_URL_KEY: pooler_client_url(
            target=target, password=client, host=host, tls=tls is not None
        ),
        CLIENT_PASSWORD_KEY: client,
        CLIENT_HOST_KEY: host,
    }
    if tls is not None:
        values[TLS_KEY] = tls.key_pem
        values[TLS_CERT] = tls.cert_pem
        # What the workload trusts: this certificate, and the staged and recent ones.
        values[CLIENT_CA_KEY] = trusted_certs or tls.cert_pem
        if staged_tls is not None:
            values[NEXT_TLS_KEY] = staged_tls.key_pem
            values[NEXT_TLS_CERT] = staged_tls.cert_pem
    if target.ca_pem is not None:
        values[CA_KEY] = target.ca_pem
    return values


def pooler_client_fingerprint(values: Mapping[str, str]) -> str:
    """What the workload's pods depend on (their URL to the pooler), as an HMAC keyed with
    the client password: it goes into the workload's checksum, so that the workload rolls
    when its credential changes, and never for a rotation of the role's password."""
    client = values[CLIENT_PASSWORD_KEY]
    digest = hmac.new(client.encode(), _HASH_CONTEXT + values[CLIENT_URL_KEY].encode(), "sha256")
    return digest.hexdigest()[:32]


def pooler_config_hash(values: Mapping[str, str], *, password: str) -> str:
    """The pod template's hash of `values`: an HMAC keyed with the password (see module).

    Not of what only the workload reads about the pooler's certificates (the trusted bundle,
    the staged pair): staging the next certificate must not roll the pooler."""
    hashed = {k: v for k, v in values.items() if k not in _NOT_HASHED}
    message = json.dumps(sorted_map(hashed), sort_keys=True, separators=(",", ":"))
    digest = hmac.new(password.encode(), _HASH_CONTEXT + message.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def pooler_selector(tenant: str) -> dict[str, str]:
    """The pooler Deployment's selector; never change it (a selector is immutable)."""
    return sorted_map({APP_NAME_LABEL: POOLER_NAME, TENANT_LABEL: tenant})


def _metadata(*, tenant: str, namespace: str, owner: OwnerReference) -> ObjectMeta:
    meta = child_metadata(
        name=POOLER_NAME, namespace=namespace, tenant=tenant, owner=owner, component="database"
    )
    meta["labels"] = sorted_map({**meta["labels"], APP_NAME_LABEL: POOLER_NAME})
    return meta


def _amounts(amounts: ResourceList | None) -> dict[str, str]:
    if amounts is None:
        return {}
    pairs = (("cpu", amounts.cpu), ("memory", amounts.memory))
    return {name: str(value) for name, value in pairs if value is not None}


def _resources(pooler: PoolerSpec) -> dict[str, dict[str, str]]:
    if pooler.resources is None:
        return {"requests": dict(_DEFAULT_REQUESTS), "limits": dict(_DEFAULT_LIMITS)}
    rendered = {
        "requests": _amounts(pooler.resources.requests),
        "limits": _amounts(pooler.resources.limits),
    }
    # An empty map is dropped by the API server (and would then look like drift).
    return {key: value for key, value in rendered.items() if value}


def _container(pooler: PoolerSpec, image: PoolerImage) -> dict[str, Any]:
    tcp = {"tcpSocket": {"port": "pgbouncer"}}
    container: dict[str, Any] = {
        "name": "pgbouncer",
        "image": image.image,
        # The binary, not the image's entrypoint: entrypoints that write a configuration
        # of their own would meet the read-only root filesystem.
        "command": ["pgbouncer", f"{CONFIG_DIR}/{INI_KEY}"],
        "ports": [{"name": "pgbouncer", "containerPort": POOLER_PORT, "protocol": "TCP"}],
        "readinessProbe": {**tcp, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {
            **tcp,
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 6,
        },
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
        "resources": _resources(pooler),
    }
    if image.pull_policy is not None:
        container["imagePullPolicy"] = image.pull_policy
    return container


def _deployment(
    *,
    tenant: str,
    namespace: str,
    owner: OwnerReference,
    pooler: PoolerSpec,
    config_hash: str,
    with_ca: bool,
    with_tls: bool,
    image: PoolerImage,
) -> KubeObject:
    selector = pooler_selector(tenant)
    items = [{"key": INI_KEY, "path": INI_KEY}, {"key": USERLIST_KEY, "path": USERLIST_KEY}]
    if with_ca:
        items.append({"key": CA_KEY, "path": CA_KEY})
    if with_tls:
        items += [{"key": TLS_KEY, "path": TLS_KEY}, {"key": TLS_CERT, "path": TLS_CERT}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(tenant=tenant, namespace=namespace, owner=owner),
        "spec": {
            "replicas": pooler.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            # A new pod must be ready before an old one goes: the tenant keeps a pool.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": sorted_map({**selector, COMPONENT_LABEL: "database"}),
                    "annotations": {POOLER_HASH_ANNOTATION: config_hash},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": dict(restricted_pod_security(RUN_AS_ID)),
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": _ANTI_AFFINITY_WEIGHT,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": selector},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                    "containers": [_container(pooler, image)],
                    "volumes": [
                        {
                            "name": "config",
                            "secret": {
                                "secretName": POOLER_NAME,
                                "items": items,
                                "defaultMode": 0o440,
                            },
                        }
                    ],
                },
            },
        },
    }


def render_pooler(
    *,
    tenant: str,
    namespace: str,
    owner: OwnerReference,
    pooler: PoolerSpec,
    target: PoolerTarget,
    password: str,
    image: PoolerImage,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    client_password: str | None = None,
    tls: PoolerTls | None = None,
    staged_tls: PoolerTls | None = None,
    trusted_certs: str | None = None,
    plain_clients: bool = False,
    client_rotation: str | None = None,
) -> list[KubeObject]:
    """The pooler's objects in apply order: Secret, Deployment, Service, PDB (2+ replicas).

    Raises `PoolerConfigError` when the password cannot be written into the auth file.
    `client_rotation` goes on the Secret as `CLIENT_ROTATION_ANNOTATION`.
    """
    values = pooler_config_values(
        target=target,
        pooler=pooler,
        password=password,
        namespace=namespace,
        cluster_domain=cluster_domain,
        client_password=client_password,
        tls=tls,
        staged_tls=staged_tls,
        trusted_certs=trusted_certs,
        plain_clients=plain_clients,
    )
    config_hash = pooler_config_hash(values, password=password)
    meta = _metadata(tenant=tenant, namespace=namespace, owner=owner)
    encoded = {
        key: base64.b64encode(value.encode()).decode("ascii") for key, value in values.items()
    }
    secret = opaque_secret(meta, encoded)
    if client_rotation is not None:
        # On the Secret only (the other objects get metadata of their own): not hashed, so
        # recording it rolls nothing.
        secret["metadata"] = {
            **secret["metadata"],
            "annotations": {CLIENT_ROTATION_ANNOTATION: client_rotation},
        }
    objects: list[KubeObject] = [
        secret,
        _deployment(
            tenant=tenant,
            namespace=namespace,
            owner=owner,
            pooler=pooler,
            config_hash=config_hash,
            with_ca=target.ca_pem is not None,
            with_tls=tls is not None,
            image=image,
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(tenant=tenant, namespace=namespace, owner=owner),
            "spec": {
                "type": "ClusterIP",
                "selector": pooler_selector(tenant),
                "ports": [
                    {
                        "name": "postgresql",
                        "protocol": "TCP",
                        "port": SERVICE_PORT,
                        "targetPort": "pgbouncer",
                    }
                ],
            },
        },
    ]
    if pooler.replicas > 1:
        objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _metadata(tenant=tenant, namespace=namespace, owner=owner),
                "spec": {
                    "minAvailable": 1,
                    "selector": {"matchLabels": pooler_selector(tenant)},
                    "unhealthyPodEvictionPolicy": "AlwaysAllow",
                },
            }
        )
    return objects

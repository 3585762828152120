"""PostgreSQL sites: where tenant databases live, and the admin credentials for each.

A *site* is one PostgreSQL server (or the primary of a replicated cluster) that the
operator provisions tenant databases on. Sites are operator configuration, not part of
any tenant's spec: platform teams declare them once (Helm values -> a YAML file or an
environment variable), tenants refer to them by name. A site may name its ``standby``
site, which failover promotes.

The admin password is not in this configuration: each site names a Kubernetes Secret
(``adminSecret``) that the kube layer reads; :meth:`AdminCredentials.from_secret_data`
turns that Secret's data into credentials whose password never shows in a repr, a str
or a log line.

Configuration format (YAML or JSON)::

    sites:
      eu-west-1:
        host: pg-eu-west-1.db.internal
        port: 5432                      # optional, default 5432
        adminDatabase: postgres         # optional, the database admin sessions use
        sslMode: verify-full            # optional, libpq sslmode, default verify-full
        sslRootCert: /etc/cleo/pg-ca.pem  # the CA that signed the server's certificate
        connectTimeoutSeconds: 5        # optional, at least 2 (libpq's minimum)
        statementTimeoutSeconds: 30     # optional
        pool: {minSize: 0, maxSize: 4}  # optional
        adminSecret: {name: pg-admin-eu-west-1, namespace: cleo-system}
        standby: eu-west-2              # optional, another site of this file

Why ``verify-full`` by default: the admin logs in with a password, and anything on the
cluster network that can answer on the site's address could otherwise pose as the site
(``prefer`` and ``require`` encrypt but never check who answers) and collect it. With
``verify-full`` libpq refuses a server whose certificate is not signed by the site's CA
(``sslRootCert``) for the site's host name, before any password is sent. A weaker mode
(:data:`WEAK_SSL_MODES`) stays possible for a site on a trusted network, but is reported:
a log line at start and a ``DatabaseTLS`` condition on each of its tenants.

Why the CA is read here, at load: the tenant's own clients (its pods, its backup runner)
must check the same server with the same CA, but ``sslRootCert`` is a path inside the
operator's pod. The operator reads the file once, checks that it holds PEM certificates
(a wrong file is a configuration error naming ``sites.<name>.sslRootCert``, not a TLS
failure in every tenant pod later), and hands the PEM to the tenant with its credentials
(see :mod:`cleo_operator.data.tenant_db`). A CA certificate is public: it may be copied.

Without ``sslRootCert`` a ``verify-full`` site is checked against the system's trusted
CAs (libpq ``sslrootcert=system``, libpq 16 or later), for a server with a publicly
trusted certificate. ``verify-ca`` needs ``sslRootCert``: libpq refuses ``verify-ca``
with the system store, and any publicly trusted certificate would pass it anyway.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cleo_operator.data.errors import SiteConfigError

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

DEFAULT_SSL_MODE: Final[SslMode] = "verify-full"
"""Admin connections check the server's certificate and host name unless told otherwise."""

WEAK_SSL_MODES: Final = frozenset({"disable", "allow", "prefer", "require"})
"""libpq modes that never authenticate the server: a site using one is reported."""

SITES_ENV: Final = "CLEO_SITES"
"""Environment variable holding the site configuration inline (YAML or JSON)."""

SITES_FILE_ENV: Final = "CLEO_SITES_FILE"
"""Environment variable naming a file that holds the site configuration."""

SYSTEM_ROOT_CERT: Final = "system"
"""libpq's ``sslrootcert`` value for the system's trusted CAs (libpq 16 and later)."""

CA_KEY: Final = "ca.crt"
"""Key of the tenant's credentials Secret holding the site's CA certificate(s), PEM."""
CA_MOUNT_DIR: Final = "/var/run/cleo/database"
"""Where the tenant's pods (and its backup runner) mount ``CA_KEY``, read-only."""
CA_PATH: Final = f"{CA_MOUNT_DIR}/{CA_KEY}"
"""The CA file in the tenant's pods: their ``PGSSLROOTCERT`` and ``sslrootcert``."""

MAX_CA_BYTES: Final = 256 * 1024
"""Largest ``sslRootCert`` file accepted: it is copied into each tenant's Secret."""

_SITE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SITE_KEYS = frozenset(
    {
        "host",
        "port",
        "adminDatabase",
        "sslMode",
        "sslRootCert",
        "connectTimeoutSeconds",
        "statementTimeoutSeconds",
        "pool",
        "adminSecret",
        "standby",
    }
)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SecretRef:
    """A Kubernetes Secret by name and namespace."""

    name: str
    """Name of the Secret."""
    namespace: str
    """Namespace of the Secret."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SiteConfig:
    """How to reach one PostgreSQL site as its admin."""

    name: str
    """The site's name, as tenants refer to it."""
    host: str
    """Host name or IP address of the server (the primary, for a replicated site)."""
    port: int = 5432
    """TCP port of the server."""
    admin_database: str = "postgres"
    """Database the admin sessions connect to (tenant databases are created from it)."""
    sslmode: SslMode = DEFAULT_SSL_MODE
    """libpq ``sslmode``; anything below ``verify-ca`` does not authenticate the server."""
    ssl_root_cert: str | None = None
    """CA bundle for ``verify-ca``/``verify-full`` (libpq ``sslrootcert``), a path here."""
    ca_pem: str | None = dataclasses.field(default=None, repr=False)
    """The PEM certificate(s) read from ``ssl_root_cert`` at load: what tenants get."""
    connect_timeout_seconds: int = 5
    """Give up connecting after this long; whole seconds, at least 2 (as libpq enforces)."""
    statement_timeout_seconds: float = 30.0
    """Server-side limit on each statement of an admin session."""
    pool_min_size: int = 0
    """Admin connections kept open to the site even when idle."""
    pool_max_size: int = 4
    """Most admin connections open to the site at once (bounds the load per site)."""
    admin_secret: SecretRef | None = None
    """Secret with the admin's ``username`` and ``password``."""
    standby: str | None = None
    """Name of the site that is this site's standby, if it has one."""

    def connection_kwargs(self, *, dbname: str | None = None) -> dict[str, Any]:
        """libpq connection parameters, without user and password."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": dbname or self.admin_database,
            "sslmode": self.sslmode,
            "connect_timeout": self.connect_timeout_seconds,
            "application_name": "cleo-operator",
            # Notice a peer that vanished (network partition) instead of waiting on a
            # dead TCP connection for the kernel's default of many minutes.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": self.connect_timeout_seconds * 1000 * 3,
        }
        if self.ssl_root_cert:
            kwargs["sslrootcert"] = self.ssl_root_cert
        elif self.verifies_server:
            kwargs["sslrootcert"] = SYSTEM_ROOT_CERT
        return kwargs

    @property
    def verifies_server(self) -> bool:
        """Whether libpq checks the server's certificate (``verify-ca``/``verify-full``)."""
        return self.sslmode not in WEAK_SSL_MODES

    @property
    def statement_timeout_ms(self) -> int:
        return max(1, round(self.statement_timeout_seconds * 1000))


class AdminCredentials:
    """A site admin's user and password; the password never shows in repr, str or logs."""

    __slots__ = ("_password", "user")

    def __init__(self, *, user: str, password: str) -> None:
        self.user = user
        """Role the operator logs in as (a superuser, or CREATEDB CREATEROLE)."""
        self._password = password

    @property
    def password(self) -> str:
        """The admin password (read it only to hand it to libpq)."""
        return self._password

    def __repr__(self) -> str:
        return f"AdminCredentials(user={self.user!r}, password=<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AdminCredentials):
            return NotImplemented
        return (self.user, self._password) == (other.user, other._password)

    def __hash__(self) -> int:
        return hash((self.user, self._password))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would put the password in a byte string someone might log or store.
        raise TypeError("AdminCredentials cannot be pickled")

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str], *, where: str) -> AdminCredentials:
        """Credentials from a Secret's ``data`` (base64 values of ``username``, ``password``).

        ``where`` names the Secret in error messages (``namespace/name``).
        """
        values: dict[str, str] = {}
        for key in ("username", "password"):
            raw = data.get(key)
            if not raw:
                raise SiteConfigError(
                    f"Secret {where}: key {key!r} is missing or empty; it must hold the "
                    "site admin's user name and password (like a kubernetes.io/basic-auth Secret)."
                )
            try:
                values[key] = base64.b64decode(raw, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise SiteConfigError(
                    f"Secret {where}: key {key!r} is not base64-encoded UTF-8 text."
                ) from None
        return cls(user=values["username"], password=values["password"])


# --------------------------------------------------------------------------- parsing


def parse_site_config(document: object, *, read_ca_files: bool = True) -> dict[str, SiteConfig]:
    """Validate a parsed site configuration (``{"sites": {...}}``); returns sites by name.

    Raises :class:`SiteConfigError` naming the field path (``sites.eu-west-1.port``) of
    the first problem found. ``read_ca_files`` reads each ``sslRootCert`` into
    ``ca_pem`` (the operator always does; ``False`` checks a configuration meant for
    another machine, such as a chart's output).
    """
    if not isinstance(document, Mapping):
        raise SiteConfigError("site configuration: expected a mapping with a 'sites' key.")
    unknown = set(document) - {"sites"}
    if unknown:
        raise SiteConfigError(
            f"site configuration: unknown top-level key(s) {sorted(map(str, unknown))}; "
            "only 'sites' is allowed."
        )
    raw_sites = document.get("sites")
    if not isinstance(raw_sites, Mapping) or not raw_sites:
        raise SiteConfigError("sites: expected a non-empty mapping of site name to site settings.")
    sites: dict[str, SiteConfig] = {}
    for name, raw in raw_sites.items():
        path = f"sites.{name}"
        if not isinstance(name, str) or not _SITE_NAME.match(name):
            raise SiteConfigError(
                f"{path}: site names must be lowercase letters, digits and '-', at most "
                "63 characters, starting and ending with a letter or digit."
            )
        sites[name] = _parse_site(name, raw, path, read_ca_files=read_ca_files)
    for site in sites.values():
        if site.standby is None:
            continue
        if site.standby == site.name:
            raise SiteConfigError(f"sites.{site.name}.standby: a site cannot be its own standby.")
        if site.standby not in sites:
            raise SiteConfigError(
                f"sites.{site.name}.standby: names site {site.standby!r}, which is not "
                f"defined; defined sites: {sorted(sites)}."
            )
    return sites


def load_site_config(
    text: str, *, source: str = "site configuration", read_ca_files: bool = True
) -> dict[str, SiteConfig]:
    """Parse YAML (or JSON, a subset of it) text; ``source`` names it in errors."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SiteConfigError(f"{source}: not valid YAML{where}.") from None
    try:
        return parse_site_config(document, read_ca_files=read_ca_files)
    except SiteConfigError as error:
        raise SiteConfigError(f"{source}: {error.message}") from None


def site_config_from_env(environ: Mapping[str, str] | None = None) -> dict[str, SiteConfig]:
    """Sites from ``$CLEO_SITES`` (inline) or ``$CLEO_SITES_FILE`` (a path)."""
    env = os.environ if environ is None else environ
    if inline := env.get(SITES_ENV):
        return load_site_config(inline, source=f"${SITES_ENV}")
    if path := env.get(SITES_FILE_ENV):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise SiteConfigError(
                f"${SITES_FILE_ENV}: cannot read {path}: {error.strerror}; mount the site "
                "configuration there or fix the variable."
            ) from None
        return load_site_config(text, source=path)
    raise SiteConfigError(
        f"no site configuration: set {SITES_FILE_ENV} to a YAML file or {SITES_ENV} "
        "to YAML text that defines 'sites'."
    )


def _parse_site(name: str, raw: object, path: str, *, read_ca_files: bool) -> SiteConfig:
    if not isinstance(raw, Mapping):
        raise SiteConfigError(f"{path}: expected a mapping of settings.")
    unknown = set(raw) - _SITE_KEYS
    if unknown:
        raise SiteConfigError(
            f"{path}: unknown key(s) {sorted(map(str, unknown))}; allowed: {sorted(_SITE_KEYS)}."
        )
    host = _required_string(raw, "host", path)
    port = _integer(raw, "port", path, default=5432, minimum=1, maximum=65535)
    admin_database = _string(raw, "adminDatabase", path) or "postgres"
    sslmode = _string(raw, "sslMode", path) or DEFAULT_SSL_MODE
    if sslmode not in get_args(SslMode):
        raise SiteConfigError(
            f"{path}.sslMode: {sslmode!r} is not a libpq sslmode; use one of "
            f"{list(get_args(SslMode))}."
        )
    connect_timeout = _integer(
        raw, "connectTimeoutSeconds", path, default=5, minimum=2, maximum=300
    )
    statement_timeout = _number(
        raw, "statementTimeoutSeconds", path, default=30.0, minimum=0.1, maximum=86400.0
    )
    pool_min, pool_max = _pool(raw.get("pool"), f"{path}.pool")
    ssl_root_cert = _string(raw, "sslRootCert", path)
    if sslmode == "verify-ca" and ssl_root_cert is None:
        raise SiteConfigError(
            f"{path}.sslRootCert: required with sslMode verify-ca; name the file with the CA "
            "that signed the server's certificate (libpq refuses verify-ca with the system's "
            "CAs), or use verify-full for a server with a publicly trusted certificate."
        )
    ca_pem = None
    if ssl_root_cert is not None and read_ca_files:
        ca_pem = read_ca_file(ssl_root_cert, field=f"{path}.sslRootCert")
    return SiteConfig(
        name=name,
        host=host,
        port=port,
        admin_database=admin_database,
        sslmode=cast(SslMode, sslmode),
        ssl_root_cert=ssl_root_cert,
        ca_pem=ca_pem,
        connect_timeout_seconds=connect_timeout,
        statement_timeout_seconds=statement_timeout,
        pool_min_size=pool_min,
        pool_max_size=pool_max,
        admin_secret=_secret_ref(raw.get("adminSecret"), f"{path}.adminSecret"),
        standby=_string(raw, "standby", path),
    )


def read_ca_file(path: str, *, field: str) -> str:
    """The PEM certificate(s) in the file at ``path``; ``field`` names it in errors."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CA_BYTES + 1)
    except OSError as error:
        raise SiteConfigError(
            f"{field}: cannot read {path}: {error.strerror}; mount the CA certificate of the "
            "site's server there (PEM) or fix the path."
        ) from None
    if len(data) > MAX_CA_BYTES:
        raise SiteConfigError(
            f"{field}: {path} is larger than {MAX_CA_BYTES} bytes; it must hold only the CA "
            "certificate(s) that signed the site's server certificate."
        )
    return validate_ca_pem(data, field=field, source=path)


def validate_ca_pem(data: bytes, *, field: str, source: str) -> str:
    """``data`` as PEM text if it is one or more PEM X.509 certificates (nothing else)."""
    problem = f"{field}: {source} does not hold PEM CA certificate(s)"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise SiteConfigError(f"{problem} (it is not ASCII text).") from None
    if "PRIVATE KEY" in text:
        # Never hand a private key on to every tenant, whatever else the file holds.
        raise SiteConfigError(
            f"{problem} only: it holds a private key. Give the CA certificate alone."
        )
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise SiteConfigError(
            f"{problem}; expected '-----BEGIN CERTIFICATE-----' block(s)."
        ) from None
    if not certificates:
        raise SiteConfigError(f"{problem}.")
    # Re-encoded: comments and stray text of the file do not travel to the tenants.
    return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certificates)


def _pool(raw: object, path: str) -> tuple[int, int]:
    if raw is None:
        return 0, 4
    if not isinstance(raw, Mapping):
        raise SiteConfigError(f"{path}: expected a mapping with minSize and maxSize.")
    unknown = set(raw) - {"minSize", "maxSize"}
    if unknown:
        raise SiteConfigError(f"{path}: unknown key(s) {sorted(map(str, unknown))}.")
    min_size = _integer(raw, "minSize", path, default=0, minimum=0, maximum=100)
    max_size = _integer(raw, "maxSize", path, default=max(4, min_size), minimum=1, maximum=100)
    if max_size < min_size:
        raise SiteConfigError(
            f"{path}.maxSize: {max_size} is less than minSize {min_size}; raise maxSize."
        )
    return min_size, max_size


def _secret_ref(raw: object, path: str) -> SecretRef:
    if not isinstance(raw, Mapping):
        raise SiteConfigError(
            f"{path}: required; name the Secret with the site admin's username and "
            "password as {name: ..., namespace: ...}."
        )
    unknown = set(raw) - {"name", "namespace"}
    if unknown:
        raise SiteConfigError(f"{path}: unknown key(s) {sorted(map(str, unknown))}.")
    name = _required_string(raw, "name", path)
    namespace = _required_string(raw, "namespace", path)
    for key, value in (("name", name), ("namespace", namespace)):
        if not _K8S_NAME.match(value):
            raise SiteConfigError(f"{path}.{key}: {value!r} is not a valid Kubernetes name.")
    return SecretRef(name=name, namespace=namespace)


def _required_string(raw: Mapping[str, object], key: str, path: str) -> str:
    value = _string(raw, key, path)
    if value is None:
        raise SiteConfigError(f"{path}.{key}: required.")
    return value


def _string(raw: Mapping[str, object], key: str, path: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SiteConfigError(f"{path}.{key}: expected a non-empty string.")
    return value.strip()


def _integer(
    raw: Mapping[str, object], key: str, path: str, *, default: int, minimum: int, maximum: int
) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SiteConfigError(f"{path}.{key}: expected an integer, got {value!r}.")
    if not minimum <= value <= maximum:
        raise SiteConfigError(f"{path}.{key}: {value} is out of range; use {minimum}..{maximum}.")
    return value


def _number(
    raw: Mapping[str, object],
    key: str,
    path: str,
    *,
    default: float,
    minimum: float,
    maximum: float,
) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SiteConfigError(f"{path}.{key}: expected a number, got {value!r}.")
    if not minimum <= value <= maximum:
        raise SiteConfigError(f"{path}.{key}: {value} is out of range; use {minimum}..{maximum}.")
    return float(value)

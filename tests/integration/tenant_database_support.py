"""Shared pieces of the tenant database tests: a real API server and real PostgreSQL.

Each test gets its own namespaces, CleoTenant objects and tenant names, so the tests
share the session's cluster and server without seeing each other's objects. Sites are
configured the way the operator process gets them (``$CLEO_SITES`` text, admin Secrets in
an "operator namespace"), so ``TenantDatabases.from_environment`` is what is tested.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.data.pool import BreakerSettings, PoolSettings
from cleo_operator.data.tenant_db import tenant_database_name
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import NAMESPACE, SECRET, TENANT
from cleo_operator.reconcile.database import (
    PASSWORD_KEY,
    BeforeDrop,
    DatabaseOutcome,
    DatabaseSettings,
    TenantDatabases,
)
from cleo_operator.render.meta import tenant_owner
from tests.harness.postgres import PostgresServer
from tests.harness.specs import tenant_manifest

NOW = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def namespace(kube: KubeClient, name: str | None = None) -> Iterator[str]:
    """A fresh namespace, deleted afterwards."""
    name = name or unique("tdb")
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        kube.delete(NAMESPACE, name)


def admin_secret(kube: KubeClient, *, namespace: str, name: str, user: str, password: str) -> None:
    """Write a site admin Secret as a platform team would."""
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/basic-auth",
            "data": {
                "username": base64.b64encode(user.encode()).decode(),
                "password": base64.b64encode(password.encode()).decode(),
            },
        }
    )


def superuser_secret(
    kube: KubeClient, server: PostgresServer, *, namespace: str, name: str = "pg-admin"
) -> str:
    """Write `server`'s superuser as the site admin Secret `name` in `namespace`; its name."""
    admin_secret(
        kube, namespace=namespace, name=name, user=server.superuser, password=server.password
    )
    return name


def site_entry(
    *,
    host: str,
    port: int,
    secret_namespace: str,
    secret_name: str,
    connect_timeout: int = 2,
) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "sslMode": "disable",
        "connectTimeoutSeconds": connect_timeout,
        "adminSecret": {"name": secret_name, "namespace": secret_namespace},
    }


def server_site(
    kube: KubeClient, server: PostgresServer, *, namespace: str, secret_name: str
) -> dict[str, Any]:
    """`server` as a site: its admin Secret written in `namespace`, and the site's entry."""
    superuser_secret(kube, server, namespace=namespace, name=secret_name)
    return site_entry(
        host=server.host, port=server.port, secret_namespace=namespace, secret_name=secret_name
    )


def build_databases(
    kube: KubeClient,
    sites: Mapping[str, Mapping[str, Any]],
    *,
    before_drop: BeforeDrop | None = None,
    **settings: Any,
) -> TenantDatabases:
    """``TenantDatabases`` exactly as at operator start, from ``$CLEO_SITES`` text."""
    environ = {"CLEO_SITES": yaml.safe_dump({"sites": dict(sites)})}
    defaults: dict[str, Any] = {
        "wait_seconds": 15.0,  # healthy operations finish in one call, even on a busy machine
        "pool": PoolSettings(breaker=BreakerSettings(failure_threshold=2, cooldown_seconds=30)),
    }
    return TenantDatabases.from_environment(
        kube,
        environ=environ,
        settings=DatabaseSettings(**{**defaults, **settings}),
        before_drop=before_drop,
    )


MAIN_SITE: Mapping[str, Mapping[str, Any]] = {"main": {}}
"""One site, "main", as `server_site` describes the server."""


@contextlib.contextmanager
def server_databases(
    kube: KubeClient,
    server: PostgresServer,
    *,
    prefix: str,
    admin: str = "pg-admin",
    sites: Mapping[str, Mapping[str, Any]] = MAIN_SITE,
    before_drop: BeforeDrop | None = None,
    **settings: Any,
) -> Iterator[TenantDatabases]:
    """``TenantDatabases`` with `server` as each of `sites` (a site's entry changed by the
    fields given for it), its admin Secret (named `admin`) in an operator namespace of its
    own (named from `prefix`); the pools are closed and the namespace deleted on the way
    out."""
    with namespace(kube, unique(prefix)) as operator_ns:
        site = server_site(kube, server, namespace=operator_ns, secret_name=admin)
        entries = {name: {**site, **fields} for name, fields in sites.items()}
        databases = build_databases(kube, entries, before_drop=before_drop, **settings)
        with contextlib.closing(databases):
            yield databases


def databases_fixture(
    prefix: str,
    *,
    admin: str = "pg-admin",
    sites: Mapping[str, Mapping[str, Any]] = MAIN_SITE,
    before_drop_for: Callable[[KubeClient], BeforeDrop] | None = None,
    **settings: Any,
) -> Any:
    """A module-scoped fixture of the `server_databases` on the session's server, for a test
    module to name: ``databases = databases_fixture("bk-operator")``. `before_drop_for`
    makes the hook from the session's client, as the operator's registry does."""

    @pytest.fixture(scope="module")
    def databases(
        kube: KubeClient, crds_installed: None, postgres_server: PostgresServer
    ) -> Iterator[TenantDatabases]:
        del crds_installed
        hook = before_drop_for(kube) if before_drop_for else None
        with server_databases(
            kube,
            postgres_server,
            prefix=prefix,
            admin=admin,
            sites=sites,
            before_drop=hook,
            **settings,
        ) as service:
            yield service

    return databases


class Tenant:
    """A CleoTenant object on the API server (the owner of its Secret) and its arguments."""

    def __init__(self, kube: KubeClient, name: str, spec: Mapping[str, Any]) -> None:
        self.kube = kube
        self.name = name
        self.raw_spec = dict(spec)
        obj = kube.create(tenant_manifest(name, self.raw_spec))
        self.uid: str = obj["metadata"]["uid"]
        self.annotations: dict[str, str] = {}

    @property
    def spec(self) -> CleoTenantSpec:
        return parse_tenant_spec(self.raw_spec)

    @property
    def owner(self) -> OwnerReference:
        return tenant_owner(name=self.name, uid=self.uid)

    def delete(self) -> None:
        self.kube.delete(TENANT, self.name)


def reconcile(
    databases: TenantDatabases,
    tenant: Tenant,
    ns: str,
    *,
    now: datetime.datetime = NOW,
    spec: CleoTenantSpec | None = None,
) -> DatabaseOutcome:
    return databases.reconcile(
        tenant=tenant.name,
        uid=tenant.uid,
        spec=spec or tenant.spec,
        namespace=ns,
        owner=tenant.owner,
        annotations=tenant.annotations,
        now=now,
    )


def secret_of(kube: KubeClient, ns: str, name: str = "cleo-database") -> KubeObject | None:
    return kube.get(SECRET, name, namespace=ns)


def secret_values(secret: KubeObject | None) -> dict[str, str]:
    assert secret is not None, "the credentials Secret does not exist"
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def password_in(kube: KubeClient, ns: str) -> str:
    return secret_values(secret_of(kube, ns))[PASSWORD_KEY]


def connect_with_secret(values: Mapping[str, str], **overrides: str) -> psycopg.Connection[Any]:
    """Connect exactly as the application would: with the Secret's libpq variables."""
    params: dict[str, Any] = {
        "host": values["PGHOST"],
        "port": values["PGPORT"],
        "dbname": values["PGDATABASE"],
        "user": values["PGUSER"],
        "password": values["PGPASSWORD"],
        "sslmode": values["PGSSLMODE"],
        **overrides,
    }
    return psycopg.connect(**params, connect_timeout=5, autocommit=True)


def can_log_in(server: PostgresServer, *, tenant: str, password: str) -> bool:
    ident = tenant_database_name(tenant)
    try:
        with psycopg.connect(
            host=server.host,
            port=server.port,
            user=ident,
            password=password,
            dbname=ident,
            connect_timeout=5,
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def drop_tenant_objects(server: PostgresServer, tenant: str) -> None:
    ident = tenant_database_name(tenant)
    server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(ident)))
    server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ident)))


def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started

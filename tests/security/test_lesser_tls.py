"""Anything on the cluster network poses as a site to collect the admin password.

With ``sslmode=prefer`` (the old default) libpq encrypts if it can but never checks who
answers, and sends the password to whoever asks for it, in clear text if asked so. The
default is now ``verify-full``: a server whose certificate was not signed by the site's CA
for the site's host name is refused during the TLS handshake, before any password. A
weaker ``sslMode`` is still possible, and is reported on each tenant of the site.
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.data.errors import AuthenticationFailed, ServerNotVerified
from cleo_operator.data.pool import SitePools
from cleo_operator.data.sites import AdminCredentials, SiteConfig, parse_site_config
from cleo_operator.data.tenant_db import ensure_tenant_database, tenant_role_name
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import NAMESPACE
from cleo_operator.reconcile.database import DatabasePart, TenantDatabases
from cleo_operator.reconcile.tenant import TenantReconciler
from tests.harness.cluster_fixtures import wait_for
from tests.harness.postgres import PostgresServer
from tests.harness.postgres_tls import (
    Authority,
    ServerCertificate,
    issue_server_certificate,
    make_authority,
)
from tests.harness.specs import IMAGE, tenant_manifest
from tests.integration.tenant_database_support import (
    TENANT,
    build_databases,
    drop_tenant_objects,
    namespace,
    server_site,
    unique,
)
from tests.security.impersonation_support import impersonating_server, password_attempts

pytestmark = [pytest.mark.security, pytest.mark.postgres]


@pytest.fixture(scope="module")
def site_ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("site-ca"), "site")


@pytest.fixture(scope="module")
def impersonator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL server with a certificate from another CA, harvesting passwords."""
    with impersonating_server(tmp_path_factory.mktemp("impersonator")) as server:
        yield server


@pytest.fixture(scope="module")
def genuine_site(
    site_ca: Authority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostgresServer]:
    certificate: ServerCertificate = issue_server_certificate(
        site_ca, tmp_path_factory.mktemp("genuine")
    )
    with PostgresServer(tls=certificate) as server:
        yield server


def pools_for(site: SiteConfig, password: str) -> SitePools:
    credentials = AdminCredentials(user="postgres", password=password)
    return SitePools({site.name: site}, credentials=lambda _site: credentials)


def test_default_sslmode_verifies_the_server() -> None:
    parsed = parse_site_config(
        {"sites": {"a": {"host": "db", "adminSecret": {"name": "s", "namespace": "ops"}}}}
    )
    assert parsed["a"].sslmode == "verify-full"
    assert SiteConfig(name="b", host="db").sslmode == "verify-full"
    assert parsed["a"].verifies_server


def test_impersonator_never_receives_the_admin_password(
    impersonator: PostgresServer, site_ca: Authority
) -> None:
    admin_password = "admin-" + secrets.token_urlsafe(18)
    before = len(password_attempts(impersonator))
    # The site as configured by default, with its real CA; the impersonator answers there.
    site = SiteConfig(
        name="main",
        host=impersonator.host,
        port=impersonator.port,
        ssl_root_cert=str(site_ca.cert),
        connect_timeout_seconds=2,
    )
    with (
        pools_for(site, admin_password) as pools,
        pytest.raises(ServerNotVerified) as refused,
        pools.connection("main"),
    ):
        pass
    assert "certificate" in refused.value.message
    assert admin_password not in refused.value.message
    assert password_attempts(impersonator)[before:] == [], "a login reached the impersonator"

    # Control: with the old kind of mode, the same server is asked for the password and
    # gets it (its log records the attempt): the check above can see a harvest.
    weak = SiteConfig(
        name="main",
        host=impersonator.host,
        port=impersonator.port,
        sslmode="require",
        connect_timeout_seconds=2,
    )
    with (
        pools_for(weak, admin_password) as pools,
        pytest.raises(AuthenticationFailed),
        pools.connection("main"),
    ):
        pass
    assert any(
        "password authentication failed" in line
        for line in password_attempts(impersonator)[before:]
    )


def test_the_genuine_site_is_used_with_the_default(
    genuine_site: PostgresServer, site_ca: Authority
) -> None:
    site = SiteConfig(
        name="main",
        host=genuine_site.host,
        port=genuine_site.port,
        ssl_root_cert=str(site_ca.cert),
        connect_timeout_seconds=2,
    )
    tenant = f"tls-{secrets.token_hex(3)}"
    with pools_for(site, genuine_site.password) as pools:
        with pools.connection("main") as conn:
            row = conn.execute(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
            assert row == (True,)
        result = ensure_tenant_database(
            pools, "main", tenant=tenant, password=secrets.token_urlsafe(24), connection_limit=2
        )
    assert result.changes
    assert genuine_site.execute(
        "SELECT 1 FROM pg_roles WHERE rolname = %s", (tenant_role_name(tenant),)
    ) == [(1,)]


# --------------------------------------------------------------------------- on the tenant


@pytest.fixture(scope="module")
def weak_databases(
    kube: KubeClient, crds_installed: None, postgres_server: PostgresServer
) -> Iterator[TenantDatabases]:
    del crds_installed
    with namespace(kube, unique("tls-operator")) as operator_ns:
        site = server_site(kube, postgres_server, namespace=operator_ns, secret_name="pg-admin")
        assert site["sslMode"] == "disable"
        with contextlib.closing(build_databases(kube, {"default": site})) as service:
            yield service


def condition(tenant: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for item in (tenant.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return None


@pytest.mark.cluster
@pytest.mark.usefixtures("without_session_operator")
def test_a_weak_sslmode_shows_on_the_tenant_without_gating_ready(
    kube: KubeClient, weak_databases: TenantDatabases, postgres_server: PostgresServer
) -> None:
    name = unique("t")
    kube.create(
        tenant_manifest(
            name,
            {
                "workload": {"image": IMAGE},
                "database": {"enabled": True},
            },
        )
    )
    try:
        reconciler = TenantReconciler(
            kube,
            parts=[DatabasePart(weak_databases)],
            now=lambda: datetime.datetime.now(datetime.UTC),
        )

        def reported() -> dict[str, Any] | None:
            reconciler.reconcile(name)
            tenant = kube.get(TENANT, name)
            return tenant if tenant and condition(tenant, "DatabaseReady") else None

        tenant = wait_for(reported, timeout=60, interval=0.5, what="the tenant's status")
        tls = condition(tenant, "DatabaseTLS")
        assert tls is not None
        assert (tls["status"], tls["reason"]) == ("False", "ServerNotVerified")
        assert "sslMode disable" in tls["message"]
        ready = condition(tenant, "DatabaseReady")
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("True", "Connected")
        overall = condition(tenant, "Ready")
        assert overall is None or "DatabaseTLS" not in overall["message"]
    finally:
        kube.delete(TENANT, name)
        kube.delete(NAMESPACE, f"cleo-{name}")
        drop_tenant_objects(postgres_server, name)

"""When sites fail: DatabaseReady says why, quickly, without holding up other tenants; admin
credentials that are wrong, missing or rotated; names that collide; and no secret in any
log line, status, event, condition or exception along the way."""

from __future__ import annotations

import base64
import logging
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from psycopg import sql

from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.data.errors import SiteConfigError
from cleo_operator.data.tenant_db import tenant_database_name
from cleo_operator.kube.client import KubeClient
from cleo_operator.reconcile.database import (
    ROTATE_ANNOTATION,
    DatabaseOutcome,
    TenantDatabases,
)
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer, free_loopback_port
from tests.integration.tenant_database_support import (
    SECRET,
    Tenant,
    admin_secret,
    build_databases,
    drop_tenant_objects,
    namespace,
    password_in,
    reconcile,
    secret_of,
    site_entry,
    superuser_secret,
    timed,
    unique,
)

pytestmark = RECONCILERS_ALONE

WAIT = 1.5
"""How long a reconcile waits for a site in these tests."""


@pytest.fixture(scope="module")
def operator_ns(kube: KubeClient, crds_installed: None) -> Iterator[str]:
    del crds_installed
    with namespace(kube, unique("tdb-operator")) as name:
        yield name


@pytest.fixture
def ns(kube: KubeClient) -> Iterator[str]:
    with namespace(kube) as name:
        yield name


@pytest.fixture
def tenants(kube: KubeClient, postgres_server: PostgresServer) -> Iterator[list[Tenant]]:
    """Tenants made by the test (append to the list); deleted and dropped afterwards."""
    made: list[Tenant] = []
    yield made
    for tenant in made:
        tenant.delete()
        drop_tenant_objects(postgres_server, tenant.name)


def new_tenant(kube: KubeClient, tenants: list[Tenant], site: str) -> Tenant:
    tenant = Tenant(kube, unique("t"), {"database": {"enabled": True, "site": site}})
    tenants.append(tenant)
    return tenant


@pytest.fixture
def rotating_admin(postgres_server: PostgresServer, tenants: list[Tenant]) -> Iterator[str]:
    """The name of a site admin role the test creates and rotates; gone afterwards.

    Ask for it before `close_after`: the pools that log in as it close first, then its
    sessions end, the tenants' objects it owns are dropped, and the role with them.
    """
    admin = f"cleo_admin_{secrets.token_hex(4)}"
    yield admin
    postgres_server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (admin,)
    )
    for tenant in tenants:
        drop_tenant_objects(postgres_server, tenant.name)
    postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(admin)))


def main_site(server: PostgresServer, operator_ns: str, secret: str) -> dict[str, Any]:
    return site_entry(
        host=server.host, port=server.port, secret_namespace=operator_ns, secret_name=secret
    )


@pytest.fixture
def admin(kube: KubeClient, postgres_server: PostgresServer, operator_ns: str) -> str:
    """The name of a site admin Secret in the operator namespace: the server's superuser."""
    return superuser_secret(kube, postgres_server, namespace=operator_ns)


@pytest.fixture
def main_databases(
    kube: KubeClient,
    postgres_server: PostgresServer,
    operator_ns: str,
    admin: str,
    close_after: Callable[[TenantDatabases], TenantDatabases],
) -> TenantDatabases:
    """The database part with the session's server as its one site, "main"."""
    return close_after(
        build_databases(kube, {"main": main_site(postgres_server, operator_ns, admin)})
    )


def settle(
    databases: TenantDatabases, tenant: Tenant, ns: str, *, timeout: float = 60
) -> DatabaseOutcome:
    """Reconcile until no operation is in flight (as the requeues of the real loop would)."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = reconcile(databases, tenant, ns)
        if not outcome.in_progress or time.monotonic() > deadline:
            return outcome
        time.sleep(0.2)


def reason(outcome: DatabaseOutcome) -> tuple[str, str]:
    assert outcome.condition is not None
    return outcome.condition.status, outcome.condition.reason


def test_dead_sites_answer_within_seconds_and_do_not_delay_a_healthy_site(
    kube: KubeClient,
    postgres_server: PostgresServer,
    operator_ns: str,
    tenants: list[Tenant],
    blackhole: int,
    *,
    admin: str,
    close_after: Callable[[TenantDatabases], TenantDatabases],
) -> None:
    sites = {
        "main": main_site(postgres_server, operator_ns, admin),
        # Connections refused at once: nothing listens there.
        "down": site_entry(
            host="127.0.0.1",
            port=free_loopback_port(),
            secret_namespace=operator_ns,
            secret_name=admin,
        ),
        # A server that hangs: its connect timeout (5s) is far longer than a reconcile waits.
        "hole": site_entry(
            host="127.0.0.1",
            port=blackhole,
            secret_namespace=operator_ns,
            secret_name=admin,
            connect_timeout=5,
        ),
    }
    healthy, down, hung = (new_tenant(kube, tenants, site) for site in ("main", "down", "hole"))
    databases = close_after(build_databases(kube, sites, wait_seconds=WAIT))
    with namespace(kube) as ns_main, namespace(kube) as ns_dead:
        assert reason(settle(databases, healthy, ns_main)) == ("True", "Connected")
        baseline = statistics.median(
            timed(lambda: reconcile(databases, healthy, ns_main))[1] for _ in range(3)
        )

        results: dict[str, tuple[DatabaseOutcome, float]] = {}
        barrier = threading.Barrier(3)

        def run(key: str, tenant: Tenant, ns: str) -> None:
            barrier.wait()
            results[key] = timed(lambda: reconcile(databases, tenant, ns))

        threads = [
            threading.Thread(target=run, args=("hung", hung, ns_dead)),
            threading.Thread(target=run, args=("down", down, ns_dead)),
            threading.Thread(target=run, args=("healthy", healthy, ns_main)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        hung_outcome, hung_took = results["hung"]
        assert reason(hung_outcome) == ("False", "SiteUnavailable")
        assert hung_took < WAIT + 1.0, f"a hung site held the reconcile {hung_took:.2f}s"
        assert hung_outcome.in_progress
        assert hung_outcome.requeue_after is not None
        assert "'hole'" in hung_outcome.condition.message  # type: ignore[union-attr]

        down_outcome, down_took = results["down"]
        assert reason(down_outcome) == ("False", "SiteUnavailable")
        assert down_took < 1.0, f"a refusing site took {down_took:.2f}s"
        assert down_outcome.requeue_after is not None
        assert "'down'" in down_outcome.condition.message  # type: ignore[union-attr]

        healthy_outcome, healthy_took = results["healthy"]
        assert reason(healthy_outcome) == ("True", "Connected")
        assert healthy_took - baseline < 1.0, (
            f"the healthy tenant took {healthy_took:.2f}s next to dead sites "
            f"(alone: {baseline:.2f}s)"
        )

        # Known slow now: the next reconcile on it does not wait again.
        again, again_took = timed(lambda: reconcile(databases, hung, ns_dead))
        assert reason(again) == ("False", "SiteUnavailable")
        assert again_took < 0.5
        # Nothing was written for the dead sites' tenants.
        assert secret_of(kube, ns_dead) is None


def test_wrong_admin_credentials_say_so_and_a_fixed_secret_is_picked_up(
    kube: KubeClient,
    postgres_server: PostgresServer,
    operator_ns: str,
    tenants: list[Tenant],
    ns: str,
    *,
    close_after: Callable[[TenantDatabases], TenantDatabases],
) -> None:
    wrong = "not-the-" + secrets.token_urlsafe(12)
    secret = unique("pg-admin-wrong")
    admin_secret(
        kube, namespace=operator_ns, name=secret, user=postgres_server.superuser, password=wrong
    )
    tenant = new_tenant(kube, tenants, "main")
    databases = close_after(
        build_databases(kube, {"main": main_site(postgres_server, operator_ns, secret)})
    )
    failed = settle(databases, tenant, ns)
    assert reason(failed) == ("False", "AuthenticationFailed")
    assert failed.condition is not None
    assert "'main'" in failed.condition.message
    assert wrong not in failed.condition.message
    assert failed.requeue_after is not None  # nothing in the tenant would wake it
    assert secret_of(kube, ns) is None

    # The platform team fixes the Secret: picked up without restarting anything.
    admin_secret(
        kube,
        namespace=operator_ns,
        name=secret,
        user=postgres_server.superuser,
        password=postgres_server.password,
    )
    assert reason(settle(databases, tenant, ns)) == ("True", "Connected")


def test_an_admin_password_rotated_on_the_server_and_in_the_secret_is_picked_up(
    kube: KubeClient,
    postgres_server: PostgresServer,
    operator_ns: str,
    tenants: list[Tenant],
    ns: str,
    *,
    rotating_admin: str,
    close_after: Callable[[TenantDatabases], TenantDatabases],
) -> None:
    admin = rotating_admin
    first, second = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    ident = sql.Identifier(admin)
    postgres_server.execute(
        sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(ident, sql.Literal(first))
    )
    secret = unique("pg-admin-rotating")
    admin_secret(kube, namespace=operator_ns, name=secret, user=admin, password=first)
    tenant = new_tenant(kube, tenants, "main")
    databases = close_after(
        build_databases(kube, {"main": main_site(postgres_server, operator_ns, secret)})
    )
    assert reason(settle(databases, tenant, ns)) == ("True", "Connected")

    # Rotate the admin password as a platform team would: server, then Secret; and
    # end the admin's sessions so the pool must log in again.
    postgres_server.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(second)))
    admin_secret(kube, namespace=operator_ns, name=secret, user=admin, password=second)
    postgres_server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (admin,)
    )
    # One reconcile, within the credential cache's lifetime: the refusal makes the
    # operator read the Secret again instead of failing until the cache expires.
    assert reason(settle(databases, tenant, ns)) == ("True", "Connected")


def test_a_missing_admin_secret_is_named(
    kube: KubeClient,
    postgres_server: PostgresServer,
    operator_ns: str,
    tenants: list[Tenant],
    ns: str,
    *,
    close_after: Callable[[TenantDatabases], TenantDatabases],
) -> None:
    tenant = new_tenant(kube, tenants, "main")
    databases = close_after(
        build_databases(kube, {"main": main_site(postgres_server, operator_ns, "pg-admin-nowhere")})
    )
    outcome = settle(databases, tenant, ns)
    assert reason(outcome) == ("False", "AdminSecretUnavailable")
    assert outcome.condition is not None
    assert f"{operator_ns}/pg-admin-nowhere does not exist" in outcome.condition.message
    assert outcome.requeue_after is not None


def test_unknown_sites_and_an_operator_without_sites_are_reported(
    kube: KubeClient,
    tenants: list[Tenant],
    ns: str,
    main_databases: TenantDatabases,
    close_after: Callable[[TenantDatabases], TenantDatabases],
) -> None:
    elsewhere = new_tenant(kube, tenants, "elsewhere")
    outcome = reconcile(main_databases, elsewhere, ns)
    assert reason(outcome) == ("False", "UnknownSite")
    assert outcome.condition is not None
    assert "'elsewhere'" in outcome.condition.message
    assert "['main']" in outcome.condition.message
    assert outcome.requeue_after is None  # only a spec change can help

    bare = close_after(TenantDatabases.from_environment(kube, environ={}))
    default = new_tenant(kube, tenants, "default")
    outcome = reconcile(bare, default, ns)
    assert reason(outcome) == ("False", "UnknownSite")
    assert outcome.condition is not None
    assert "no site configuration at all" in outcome.condition.message


def test_a_broken_site_configuration_is_refused_at_start_naming_the_field(
    kube: KubeClient,
) -> None:
    config = (
        "sites:\n  main:\n    host: db\n    port: 99999\n    adminSecret: {name: a, namespace: b}\n"
    )
    with pytest.raises(SiteConfigError, match=r"sites\.main\.port"):
        TenantDatabases.from_environment(kube, environ={"CLEO_SITES": config})


def test_a_database_of_the_tenants_name_made_by_someone_else_is_a_collision(
    kube: KubeClient,
    postgres_server: PostgresServer,
    tenants: list[Tenant],
    ns: str,
    main_databases: TenantDatabases,
) -> None:
    tenant = new_tenant(kube, tenants, "main")
    foreign = tenant_database_name(tenant.name)
    postgres_server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(foreign)))
    outcome = settle(main_databases, tenant, ns)
    assert reason(outcome) == ("False", "NameCollision")
    assert outcome.condition is not None
    assert foreign in outcome.condition.message
    assert secret_of(kube, ns) is None
    # Left alone: still there, still not the operator's.
    rows = postgres_server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (foreign,))
    assert rows == [(1,)]


def forms(secret: str) -> set[str]:
    """Every way a secret could show up in text."""
    return {
        secret,
        quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(secret.encode()).decode().rstrip("="),
    }


def test_no_secret_material_in_logs_status_conditions_events_or_errors(
    kube: KubeClient,
    postgres_server: PostgresServer,
    operator_ns: str,
    tenants: list[Tenant],
    caplog: pytest.LogCaptureFixture,
    *,
    blackhole: int,
    ns: str,
    admin: str,
    close_after: Callable[[TenantDatabases], TenantDatabases],
) -> None:
    caplog.set_level(logging.DEBUG)
    hole_port = blackhole
    wrong = "wrong-" + secrets.token_urlsafe(12)
    admin_secret(
        kube,
        namespace=operator_ns,
        name="pg-admin-bad",
        user=postgres_server.superuser,
        password=wrong,
    )
    sites = {
        "main": main_site(postgres_server, operator_ns, admin),
        "bad": main_site(postgres_server, operator_ns, "pg-admin-bad"),
        "hole": site_entry(
            host="127.0.0.1",
            port=hole_port,
            secret_namespace=operator_ns,
            secret_name=admin,
            connect_timeout=2,
        ),
    }
    databases = close_after(build_databases(kube, sites, wait_seconds=WAIT))
    seen: list[str] = []
    passwords: list[str] = []
    tenant = new_tenant(kube, tenants, "main")
    seen.append(repr(settle(databases, tenant, ns)))
    passwords.append(password_in(kube, ns))
    tenant.annotations[ROTATE_ANNOTATION] = "now"
    rotated = settle(databases, tenant, ns)
    seen.append(repr(rotated))
    passwords.append(password_in(kube, ns))
    assert passwords[0] != passwords[1]
    # Hand-edited, then replaced: the edited value is a secret too.
    edited = "edited-" + secrets.token_urlsafe(12)
    kube.patch_merge(
        SECRET,
        "cleo-database",
        {"data": {"PGPASSWORD": base64.b64encode(edited.encode()).decode()}},
        namespace=ns,
    )
    seen.append(repr(settle(databases, tenant, ns)))
    passwords.extend([edited, password_in(kube, ns)])

    with namespace(kube) as ns_bad, namespace(kube) as ns_hole:
        bad = new_tenant(kube, tenants, "bad")
        seen.append(repr(settle(databases, bad, ns_bad)))
        hung = new_tenant(kube, tenants, "hole")
        seen.append(repr(reconcile(databases, hung, ns_hole)))
        seen.append(repr(settle(databases, hung, ns_hole)))

    for tenant_ in (tenant, bad):
        outcome = databases.finalize(
            tenant=tenant_.name,
            uid=tenant_.uid,
            spec=delete_policy(tenant_),
            namespace=ns,
        )
        seen.append(repr(outcome))
    seen.append(repr(databases))
    # Closed here as well as by close_after: what closing logs is checked below too.
    databases.close()

    text = "\n".join(
        seen
        + [record.getMessage() for record in caplog.records]
        + [record.exc_text or "" for record in caplog.records]
        + [caplog.text]
    )
    assert "SiteUnavailable" in text
    assert "AuthenticationFailed" in text
    # Count, not `assert form not in text`: a failing assertion would print the secret.
    leaks = sum(
        form in text
        for secret in [*passwords, wrong, postgres_server.password]
        for form in forms(secret)
    )
    assert leaks == 0, f"{leaks} secret form(s) showed up in logs, outcomes or errors"


def delete_policy(tenant: Tenant) -> CleoTenantSpec:
    return parse_tenant_spec({**tenant.raw_spec, "deletionPolicy": "Delete"})

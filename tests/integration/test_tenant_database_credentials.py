"""Tenant database credentials on a real API server and a real PostgreSQL server: the
Secret works, tenants are isolated, rotations replace the password, and every way of
losing the Secret (or the role's password) heals into working credentials."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable, Iterator

import psycopg
import pytest

from cleo_operator.api.base import rfc3339
from cleo_operator.data.tenant_db import (
    set_tenant_password,
    tenant_database_name,
    tenant_role_name,
)
from cleo_operator.kube.client import KubeClient
from cleo_operator.reconcile.database import (
    ROTATE_ANNOTATION,
    ROTATION_REQUEST_ANNOTATION,
    SECRET_KEYS,
    TenantDatabases,
    credentials_fingerprint,
    new_password,
    rotation_request_pending,
)
from tests.harness.cluster_fixtures import wait_for
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer
from tests.integration.tenant_database_support import (
    NAMESPACE,
    NOW,
    SECRET,
    Tenant,
    can_log_in,
    connect_with_secret,
    databases_fixture,
    drop_tenant_objects,
    namespace,
    password_in,
    reconcile,
    secret_of,
    secret_values,
    unique,
)

pytestmark = RECONCILERS_ALONE

ADMIN_SECRET = "pg-admin-main"


# The same server under another name, "alias": a site a tenant can move to.
databases = databases_fixture(
    "tdb-operator", admin=ADMIN_SECRET, sites={"main": {}, "alias": {"host": "localhost"}}
)


@pytest.fixture
def make_tenant(
    kube: KubeClient, postgres_server: PostgresServer
) -> Iterator[Callable[..., Tenant]]:
    """`make_tenant(**database)`: a tenant with a database on "main" and the given database
    fields; each one made is deleted, and its database and role dropped, after the test."""
    made: list[Tenant] = []

    def make(**database: object) -> Tenant:
        spec = {"database": {"enabled": True, "site": "main", **database}}
        made.append(Tenant(kube, unique("t"), spec))
        return made[-1]

    yield make
    for tenant in made:
        tenant.delete()
        drop_tenant_objects(postgres_server, tenant.name)


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


@pytest.fixture
def ns(kube: KubeClient) -> Iterator[str]:
    with namespace(kube) as name:
        yield name


def role_connection_limit(server: PostgresServer, tenant: str) -> int:
    rows = server.execute(
        "SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (tenant_role_name(tenant),)
    )
    return int(rows[0][0])


def test_the_secret_holds_working_credentials_and_a_second_reconcile_writes_nothing(
    kube: KubeClient, databases: TenantDatabases, tenant: Tenant, ns: str
) -> None:
    outcome = reconcile(databases, tenant, ns)

    assert outcome.condition is not None
    assert (outcome.condition.status, outcome.condition.reason) == ("True", "Connected")
    assert outcome.ready
    assert not outcome.in_progress
    assert outcome.secret_written
    database = tenant_database_name(tenant.name)
    assert outcome.status == {
        "site": "main",
        "name": database,
        "user": tenant_role_name(tenant.name),
        "secretName": "cleo-database",
        "lastPasswordRotation": rfc3339(NOW),
    }
    assert outcome.secret_name == "cleo-database"
    assert outcome.secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "namespace": ns,
        "name": "cleo-database",
    }

    secret = secret_of(kube, ns)
    values = secret_values(secret)
    # A site with sslMode disable: no CA to hand on, no PGSSLROOTCERT (see test_database_ca).
    assert set(values) == set(SECRET_KEYS) - {"PGSSLROOTCERT", "ca.crt"}
    # The application's view: libpq variables, and DATABASE_URL, both work.
    with connect_with_secret(values) as conn:
        conn.execute("CREATE TABLE memories (note text)")
        conn.execute("INSERT INTO memories VALUES ('remember me')")
        row = conn.execute("SELECT current_user, current_database(), count(*) FROM memories")
        assert row.fetchone() == (tenant_role_name(tenant.name), database, 1)
    with psycopg.connect(values["DATABASE_URL"], connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM memories").fetchone() == (1,)

    assert secret is not None
    meta = secret["metadata"]
    assert meta["labels"]["cleoai.io/tenant"] == tenant.name
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "cleo-operator"
    assert [(o["kind"], o["name"], o["uid"]) for o in meta["ownerReferences"]] == [
        ("CleoTenant", tenant.name, tenant.uid)
    ]
    # The checksum input is the fingerprint of what the pods read, never the password.
    assert outcome.fingerprint == credentials_fingerprint(values)
    assert values["PGPASSWORD"] not in (outcome.fingerprint or "")

    # Level-based: nothing changed, so nothing is written and the pods keep running.
    again = reconcile(databases, tenant, ns)
    assert not again.secret_written
    assert again.events == ()
    assert (again.fingerprint, again.status, again.condition) == (
        outcome.fingerprint,
        outcome.status,
        outcome.condition,
    )
    after = secret_of(kube, ns)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == meta["resourceVersion"]


def test_the_connection_limit_follows_the_spec(
    kube: KubeClient,
    databases: TenantDatabases,
    postgres_server: PostgresServer,
    tenant: Tenant,
    ns: str,
) -> None:
    reconcile(databases, tenant, ns)
    assert role_connection_limit(postgres_server, tenant.name) == 20  # the spec's default

    tenant.raw_spec["database"] = {**tenant.raw_spec["database"], "connectionLimit": 3}
    outcome = reconcile(databases, tenant, ns)
    assert role_connection_limit(postgres_server, tenant.name) == 3
    assert outcome.condition is not None
    assert outcome.condition.status == "True"
    assert not outcome.secret_written  # the password did not change
    assert any("connection limit" in event for event in outcome.events)


@pytest.mark.security
def test_one_tenants_credentials_do_not_open_another_tenants_database(
    kube: KubeClient, databases: TenantDatabases, make_tenant: Callable[..., Tenant]
) -> None:
    a, b = make_tenant(), make_tenant()
    with namespace(kube) as ns_a, namespace(kube) as ns_b:
        for tenant, ns in ((a, ns_a), (b, ns_b)):
            outcome = reconcile(databases, tenant, ns)
            assert outcome.condition is not None
            assert outcome.condition.status == "True"
        values_a = secret_values(secret_of(kube, ns_a))
        values_b = secret_values(secret_of(kube, ns_b))
        with connect_with_secret(values_b) as conn:
            conn.execute("CREATE TABLE memories (secret text)")

        # A's role may not even connect to B's database...
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            connect_with_secret(values_a, dbname=values_b["PGDATABASE"])
        # ...and A's password is not B's.
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            connect_with_secret(values_a, user=values_b["PGUSER"])
        assert values_a["PGPASSWORD"] != values_b["PGPASSWORD"]


def test_rotation_on_demand_replaces_the_password_and_keeps_open_sessions(
    kube: KubeClient,
    databases: TenantDatabases,
    postgres_server: PostgresServer,
    tenant: Tenant,
    ns: str,
) -> None:
    first = reconcile(databases, tenant, ns)
    old_values = secret_values(secret_of(kube, ns))
    old = old_values["PGPASSWORD"]
    # A pod of the old ReplicaSet holds a session while the rotation happens.
    with connect_with_secret(old_values) as open_session:
        tenant.annotations[ROTATE_ANNOTATION] = "please-1"
        later = NOW + datetime.timedelta(days=1)
        rotated = reconcile(databases, tenant, ns, now=later)

        new = password_in(kube, ns)
        assert new != old
        assert rotated.secret_written
        assert rotated.fingerprint != first.fingerprint
        assert rotated.rotation_request == "please-1"
        assert rotated.status is not None
        assert rotated.status["lastPasswordRotation"] == rfc3339(later)
        assert rotated.condition is not None
        assert rotated.condition.status == "True"
        assert any("rotated" in event and "please-1" in event for event in rotated.events)
        assert can_log_in(postgres_server, tenant=tenant.name, password=new)
        assert not can_log_in(postgres_server, tenant=tenant.name, password=old)
        # No downtime for what is already connected: the old session keeps working.
        assert open_session.execute("SELECT 1").fetchone() == (1,)

    # The handled request is recorded with the password itself, in the Secret.
    secret = secret_of(kube, ns)
    assert secret is not None
    assert secret["metadata"]["annotations"][ROTATION_REQUEST_ANNOTATION] == "please-1"

    # The same value again is no new request.
    again = reconcile(databases, tenant, ns, now=later + datetime.timedelta(hours=1))
    assert not again.secret_written
    assert again.fingerprint == rotated.fingerprint
    assert password_in(kube, ns) == new

    # Any other value is.
    tenant.annotations[ROTATE_ANNOTATION] = "please-2"
    third = reconcile(databases, tenant, ns, now=later + datetime.timedelta(hours=2))
    assert third.secret_written
    assert third.rotation_request == "please-2"
    newest = password_in(kube, ns)
    assert newest not in (old, new)
    assert can_log_in(postgres_server, tenant=tenant.name, password=newest)
    assert not can_log_in(postgres_server, tenant=tenant.name, password=new)


def test_the_rotation_period_rotates_when_due_and_asks_to_be_called_then(
    kube: KubeClient,
    databases: TenantDatabases,
    postgres_server: PostgresServer,
    ns: str,
    make_tenant: Callable[..., Tenant],
) -> None:
    tenant = make_tenant(passwordRotationPeriod="1h")
    first = reconcile(databases, tenant, ns)
    assert first.requeue_after == pytest.approx(3600)
    old = password_in(kube, ns)

    not_yet = reconcile(databases, tenant, ns, now=NOW + datetime.timedelta(minutes=59))
    assert not not_yet.secret_written
    assert password_in(kube, ns) == old
    assert not_yet.requeue_after == pytest.approx(60)

    due = NOW + datetime.timedelta(minutes=61)
    rotated = reconcile(databases, tenant, ns, now=due)
    new = password_in(kube, ns)
    assert rotated.secret_written
    assert new != old
    assert rotated.status is not None
    assert rotated.status["lastPasswordRotation"] == rfc3339(due)
    assert rotated.requeue_after == pytest.approx(3600)
    assert can_log_in(postgres_server, tenant=tenant.name, password=new)
    assert not can_log_in(postgres_server, tenant=tenant.name, password=old)


def test_a_deleted_secret_heals_with_a_new_working_password(
    kube: KubeClient,
    databases: TenantDatabases,
    postgres_server: PostgresServer,
    tenant: Tenant,
    ns: str,
) -> None:
    reconcile(databases, tenant, ns)
    old = password_in(kube, ns)
    kube.delete(SECRET, "cleo-database", namespace=ns)

    healed = reconcile(databases, tenant, ns, now=NOW + datetime.timedelta(minutes=5))
    assert healed.condition is not None
    assert healed.condition.status == "True"
    assert healed.secret_written
    new = password_in(kube, ns)
    assert new != old
    with connect_with_secret(secret_values(secret_of(kube, ns))) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not can_log_in(postgres_server, tenant=tenant.name, password=old)


def test_a_deleted_namespace_heals_with_a_new_working_password(
    kube: KubeClient, databases: TenantDatabases, postgres_server: PostgresServer, tenant: Tenant
) -> None:
    name = unique("tdb-gone")
    with namespace(kube, name):
        reconcile(databases, tenant, name)
        old = password_in(kube, name)
    wait_for(
        lambda: kube.get(NAMESPACE, name) is None, timeout=90, what=f"namespace {name} deleted"
    )
    with namespace(kube, name):
        healed = reconcile(databases, tenant, name)
        assert healed.condition is not None
        assert healed.condition.status == "True"
        values = secret_values(secret_of(kube, name))
        assert values["PGPASSWORD"] != old
        with connect_with_secret(values) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_crash_after_setting_a_password_but_before_writing_the_secret_heals(
    kube: KubeClient,
    databases: TenantDatabases,
    postgres_server: PostgresServer,
    tenant: Tenant,
    ns: str,
) -> None:
    reconcile(databases, tenant, ns)
    secret = secret_of(kube, ns)
    assert secret is not None
    in_secret = password_in(kube, ns)
    # What a crash between the two writes leaves: the role has a password nobody holds.
    set_tenant_password(databases.pools, "main", tenant=tenant.name, password=new_password())
    assert not can_log_in(postgres_server, tenant=tenant.name, password=in_secret)

    healed = reconcile(databases, tenant, ns)
    assert healed.condition is not None
    assert healed.condition.status == "True"
    assert can_log_in(postgres_server, tenant=tenant.name, password=in_secret)
    # The Secret was right all along: the pods keep it and are not rolled.
    assert not healed.secret_written
    after = secret_of(kube, ns)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert any("password" in event for event in healed.events)


def test_a_password_edited_by_hand_is_replaced_by_a_generated_one(
    kube: KubeClient,
    databases: TenantDatabases,
    postgres_server: PostgresServer,
    tenant: Tenant,
    ns: str,
) -> None:
    first = reconcile(databases, tenant, ns)
    kube.patch_merge(
        SECRET,
        "cleo-database",
        {"data": {"PGPASSWORD": base64.b64encode(b"hunter2").decode()}},
        namespace=ns,
    )
    replaced = reconcile(databases, tenant, ns)
    new = password_in(kube, ns)
    assert new != "hunter2"
    assert len(new) >= 32
    assert replaced.secret_written
    assert replaced.fingerprint != first.fingerprint
    assert any("changed by hand" in event for event in replaced.events)
    assert not can_log_in(postgres_server, tenant=tenant.name, password="hunter2")
    with connect_with_secret(secret_values(secret_of(kube, ns))) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_tenant_without_a_database_gets_no_condition_and_no_secret(
    kube: KubeClient, databases: TenantDatabases, tenant: Tenant, ns: str
) -> None:
    tenant.raw_spec["database"] = {"enabled": False}
    outcome = reconcile(databases, tenant, ns)
    assert outcome.condition is None
    assert outcome.status is None
    assert outcome.ready
    assert outcome.fingerprint is None
    assert outcome.secret_name is None
    assert secret_of(kube, ns) is None


def test_moving_to_another_site_rewrites_the_secret_and_rolls_the_pods(
    kube: KubeClient, databases: TenantDatabases, tenant: Tenant, ns: str
) -> None:
    before = reconcile(databases, tenant, ns)
    old = secret_values(secret_of(kube, ns))
    assert old["PGHOST"] == "127.0.0.1"

    tenant.raw_spec["database"] = {**tenant.raw_spec["database"], "site": "alias"}
    moved = reconcile(databases, tenant, ns)
    new = secret_values(secret_of(kube, ns))
    assert new["PGHOST"] == "localhost"
    assert new["PGPASSWORD"] == old["PGPASSWORD"]  # a move is no rotation
    assert moved.secret_written
    assert moved.fingerprint != before.fingerprint  # the pods must pick up the new host
    assert moved.status is not None
    assert moved.status["site"] == "alias"
    assert moved.condition is not None
    assert moved.condition.status == "True"
    with connect_with_secret(new) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_event_handler_is_told_which_rotation_requests_are_new() -> None:
    handled = {"passwordRotationRequest": "one"}
    assert not rotation_request_pending({}, handled)
    assert not rotation_request_pending({ROTATE_ANNOTATION: "one"}, handled)
    assert not rotation_request_pending({ROTATE_ANNOTATION: "  "}, None)
    assert rotation_request_pending({ROTATE_ANNOTATION: "two"}, handled)
    assert rotation_request_pending({ROTATE_ANNOTATION: "one"}, None)  # nothing handled yet

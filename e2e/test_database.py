"""A tenant with a database, end to end, as a platform team meets it.

The operator process runs configured the way the Helm chart configures it: the PostgreSQL
sites in ``$CLEO_SITES`` and each site's admin credentials in a Secret in the operator's
namespace. kubectl applies a CleoTenant with ``spec.database.enabled``; the tenant's
namespace then holds a Secret whose credentials work, the Deployment reads it, status says
so, a rotation asked for with an annotation replaces the password, and ``deletionPolicy:
Delete`` drops the database. Nothing in the operator's log holds a password.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OperatorProcess
from tests.harness.postgres import PostgresServer
from tests.harness.specs import IMAGE, tenant_manifest

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

ROTATE = "cleoai.io/rotate-database-password"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def database_operator(operator_process: OperatorProcess) -> OperatorProcess:
    """The session's operator: it runs with one site, `default` (the session's server)."""
    return operator_process


def tenant_yaml(name: str) -> str:
    return yaml.safe_dump(
        tenant_manifest(
            name,
            {
                "deletionPolicy": "Delete",
                "workload": {"image": IMAGE},
                "database": {"enabled": True, "connectionLimit": 10},
            },
        )
    )


def credentials(cluster: LocalCluster, namespace: str) -> dict[str, str] | None:
    secret = kubectl_json(cluster, "get", "secret", "cleo-database", "-n", namespace)
    if not secret or not secret.get("data"):
        return None
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def works(values: dict[str, str] | None) -> bool:
    if not values:
        return False
    try:
        with psycopg.connect(values["DATABASE_URL"], connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def condition(tenant: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((tenant or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None


def test_a_tenant_with_a_database_gets_working_credentials(
    cluster: LocalCluster,
    database_operator: OperatorProcess,
    postgres_server: PostgresServer,
) -> None:
    name = unique("db")
    namespace = f"cleo-{name}"
    database = "cleo_" + name.replace("-", "_")
    cluster.kubectl("apply", "-f", "-", input=tenant_yaml(name))
    try:
        values = wait_for(
            lambda: (v := credentials(cluster, namespace)) and works(v) and v,
            timeout=90,
            what=f"a working cleo-database Secret in {namespace}",
        )
        assert values["PGDATABASE"] == database
        with psycopg.connect(values["DATABASE_URL"], connect_timeout=5) as conn:
            conn.execute("CREATE TABLE memories (note text)")
            conn.execute("INSERT INTO memories VALUES ('hello')")

        def reported() -> dict[str, Any] | None:
            tenant = kubectl_json(cluster, "get", "cleotenant", name)
            ready = condition(tenant, "DatabaseReady")
            return tenant if ready and ready["status"] == "True" else None

        tenant = wait_for(reported, timeout=60, what="DatabaseReady=True")
        assert tenant["status"]["database"]["secretName"] == "cleo-database"
        assert tenant["status"]["database"]["name"] == database
        deployment = kubectl_json(cluster, "get", "deployment", "cleoai", "-n", namespace)
        env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "cleo-database"}} in env_from

        # Rotation on demand: a new password in the Secret, the old one stops working.
        old = values
        cluster.kubectl("annotate", "cleotenant", name, f"{ROTATE}=first", "--overwrite")
        new = wait_for(
            lambda: (
                (v := credentials(cluster, namespace))
                and v["PGPASSWORD"] != old["PGPASSWORD"]
                and v
            ),
            timeout=90,
            what="the rotated password in the Secret",
        )
        assert works(new)
        assert not works(old)
        with psycopg.connect(new["DATABASE_URL"], connect_timeout=5) as conn:
            assert conn.execute("SELECT note FROM memories").fetchall() == [("hello",)]

        # deletionPolicy Delete: the database goes with the tenant.
        cluster.kubectl("delete", "cleotenant", name, "--wait=false")
        wait_for(
            lambda: kubectl_json(cluster, "get", "cleotenant", name) is None,
            timeout=120,
            what=f"tenant {name} deleted",
        )
        rows = postgres_server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        assert rows == []

        log = database_operator.log_text()
        leaks = sum(
            form in log
            for secret in (old["PGPASSWORD"], new["PGPASSWORD"], postgres_server.password)
            for form in (secret, base64.b64encode(secret.encode()).decode())
        )
        assert leaks == 0, f"{leaks} password form(s) showed up in the operator's log"
    finally:
        cluster.kubectl("delete", "cleotenant", name, "--wait=false", check=False)
        ident = sql.Identifier(database)
        postgres_server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))

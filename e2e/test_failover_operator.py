"""Automatic failover through the operator process, as a platform team meets it.

The operator runs with two sites, `east` (a primary) and `west` (its streaming standby).
A tenant asks for automatic failover with a short delay. The primary goes away; the
operator notices, creates a CleoFailover (the audit trail), runs it to the end (fence,
lag, promote, repoint, rollout, verify), and the tenant works again on `west`: its Secret
points there, its role writes there, and the RTO is measured and reported.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OPERATOR_NAMESPACE, OperatorProcess, start_operator
from tests.harness.postgres import PostgresServer
from tests.harness.specs import IMAGE, tenant_manifest

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

TENANT = "phoenix-db"
NAMESPACE = f"cleo-{TENANT}"


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


@pytest.fixture
def two_site_operator(
    cluster: LocalCluster,
    operator_process: OperatorProcess,
    operator_sites: dict[str, str],
    postgres_replica_pair: tuple[PostgresServer, PostgresServer],
    tmp_path: Path,
) -> Iterator[tuple[OperatorProcess, PostgresServer, PostgresServer]]:
    """The session's operator stops; one with sites east (primary) and west (standby) runs
    in its place, and the session's comes back afterwards."""
    primary, standby = postgres_replica_pair
    secrets = []
    for site, server in (("east", primary), ("west", standby)):
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"pg-admin-{site}", "namespace": OPERATOR_NAMESPACE},
                "type": "kubernetes.io/basic-auth",
                "stringData": {"username": server.superuser, "password": server.password},
            }
        )
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(secrets))
    sites = {
        "sites": {
            name: {
                "host": server.host,
                "port": server.port,
                "sslMode": "disable",
                "connectTimeoutSeconds": 2,
                "adminSecret": {"name": f"pg-admin-{name}", "namespace": OPERATOR_NAMESPACE},
                **({"standby": "west"} if name == "east" else {}),
            }
            for name, server in (("east", primary), ("west", standby))
        }
    }
    operator_process.pause()
    proc = start_operator(
        cluster,
        tmp_path / "operator.log",
        extra_args=["--operator-namespace", OPERATOR_NAMESPACE],
        env={**operator_sites, "CLEO_SITES": yaml.safe_dump(sites)},
    )
    try:
        yield proc, primary, standby
    finally:
        assert proc.stop() == 0, proc.log_text()[-3000:]
        cluster.kubectl("delete", "cleotenant", TENANT, "--wait=false", check=False)
        operator_process.resume()


def test_lost_primary_fails_over_automatically_with_a_record(
    cluster: LocalCluster,
    two_site_operator: tuple[OperatorProcess, PostgresServer, PostgresServer],
) -> None:
    operator, primary, standby = two_site_operator
    tenant = tenant_manifest(
        TENANT,
        {
            "workload": {"image": IMAGE, "replicas": 1},
            "autoscaling": {"enabled": False},
            "database": {"enabled": True, "site": "east"},
            "failover": {"automatic": True, "failoverDelay": "3s", "standbySite": "west"},
        },
    )
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(tenant))

    def armed() -> bool:
        cond = conditions(kubectl_json(cluster, "get", "cleotenant", TENANT))
        return (
            cond.get("DatabaseReady", {}).get("status") == "True"
            and cond.get("AutomaticFailover", {}).get("status") == "True"
        )

    wait_for(armed, timeout=120, what="the tenant's database on east, failover armed")
    secret = kubectl_json(cluster, "get", "secret", "cleo-database", "-n", NAMESPACE)
    creds = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert int(creds["PGPORT"]) == primary.port
    with psycopg.connect(creds["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE memory (id int PRIMARY KEY)")
        conn.execute("INSERT INTO memory SELECT generate_series(1, 100)")
    wait_for(
        lambda: (
            standby.execute(
                "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'memory'",
                dbname=creds["PGDATABASE"],
            )[0][0]
            == 1
        ),
        timeout=30,
        what="the standby to replay the tenant's table",
    )

    primary.halt()  # the primary is gone

    def failover_done() -> dict[str, Any] | None:
        items = kubectl_json(cluster, "get", "cleofailovers", "-n", NAMESPACE)["items"]
        if len(items) > 1:
            pytest.fail(f"more than one CleoFailover: {[i['metadata']['name'] for i in items]}")
        if items and (items[0].get("status") or {}).get("phase") in {"Succeeded", "Failed"}:
            return dict(items[0])
        return None

    failover = wait_for(failover_done, timeout=180, interval=1, what="the automatic failover")
    status = failover["status"]
    assert status["phase"] == "Succeeded", status
    assert failover["spec"]["type"] == "Failover"
    assert failover["spec"]["tenant"] == TENANT
    assert status["newPrimary"] == "west"
    assert status["measuredRTOSeconds"] > 0
    assert [s["name"] for s in status["steps"]][:1] == ["preflight"]
    assert all(s["state"] == "Succeeded" for s in status["steps"])

    def repointed() -> dict[str, str] | None:
        secret = kubectl_json(cluster, "get", "secret", "cleo-database", "-n", NAMESPACE)
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        return data if int(data["PGPORT"]) == standby.port else None

    moved = wait_for(repointed, timeout=60, what="the tenant's Secret to point to west")
    with psycopg.connect(moved["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO memory VALUES (101)")
        assert conn.execute("SELECT count(*) FROM memory").fetchone() == (101,)

    def healthy_again() -> bool:
        cond = conditions(kubectl_json(cluster, "get", "cleotenant", TENANT))
        return cond.get("DatabaseReady", {}).get("status") == "True"

    wait_for(healthy_again, timeout=60, what="DatabaseReady on the new primary")
    tenant_obj = kubectl_json(cluster, "get", "cleotenant", TENANT)
    assert tenant_obj["status"]["database"]["site"] == "west"
    events = cluster.kubectl(
        "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={TENANT}"
    ).stdout
    assert "FailoverCreated" in events
    for password in (moved["PGPASSWORD"], primary.password, standby.password):
        assert password not in operator.log_text()

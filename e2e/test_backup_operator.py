"""CleoBackup through the operator process: a tenant with a database gets a backup Job,
the Job's command (run here as the pod would run it) backs up and records the run on the
CleoBackup, and the operator verifies the archive by restoring it into a scratch database.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg import sql

from cleo_operator.data.tenant_db import tenant_database_name, tenant_role_name
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OperatorProcess
from tests.harness.postgres import PostgresServer
from tests.harness.specs import IMAGE, bound_backup_volume, tenant_manifest
from tests.integration.backup_cluster_support import run_job_pod

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

TENANT = "vault"
NAMESPACE = f"cleo-{TENANT}"


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def test_backup_is_taken_recorded_and_verified(  # noqa: PLR0917 - pytest fixtures
    cluster: LocalCluster,
    kube: Any,
    operator_process: OperatorProcess,
    postgres_server: PostgresServer,
    backup_volumes: Path,
    tmp_path: Path,
) -> None:
    tenant = tenant_manifest(
        TENANT,
        {
            "workload": {"image": IMAGE},
            "autoscaling": {"enabled": False},
            "database": {"enabled": True},
        },
    )
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(tenant))

    def database_ready() -> bool:
        return (
            conditions(kubectl_json(cluster, "get", "cleotenant", TENANT))
            .get("DatabaseReady", {})
            .get("status")
            == "True"
        )

    wait_for(database_ready, timeout=90, what="the tenant's database")
    database = tenant_database_name(TENANT)
    postgres_server.execute(
        sql.SQL(
            "CREATE TABLE notes (id int PRIMARY KEY, body text); "
            "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 250) g; "
            "ALTER TABLE notes OWNER TO {}"
        ).format(sql.Identifier(tenant_role_name(TENANT))),
        dbname=database,
    )
    storage = bound_backup_volume(
        "vault-backups", NAMESPACE, str(backup_volumes / NAMESPACE / "backups")
    )
    backup = {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoBackup",
        "metadata": {"name": "nightly", "namespace": NAMESPACE},
        "spec": {
            "tenant": TENANT,
            "destination": {"type": "pvc", "pvc": {"claimName": "backups", "path": "cleo"}},
            "verification": {"enabled": True},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*storage, backup]))

    job = wait_for(
        lambda: kubectl_json(cluster, "get", "job", "cleo-backup-nightly", "-n", NAMESPACE),
        timeout=60,
        what="the operator to make the backup Job",
    )
    run = run_job_pod(cluster, kube, job, workdir=tmp_path / "pod", volumes=backup_volumes)
    assert run.returncode == 0, run.stderr
    assert run.report is not None
    backup_id = run.report["backup"]["backupId"]
    assert (backup_volumes / NAMESPACE / "backups" / "cleo" / f"{backup_id}.archive").is_file()

    def verified() -> dict[str, Any] | None:
        obj = kubectl_json(cluster, "get", "cleobackup", "nightly", "-n", NAMESPACE)
        cond = conditions(obj).get("Verified")
        return obj if cond and cond["status"] == "True" else None

    obj = wait_for(verified, timeout=180, interval=1, what="the operator to verify the backup")
    status = obj["status"]
    assert status["lastSuccessfulBackup"]["backupId"] == backup_id
    assert status["lastVerifiedBackup"]["backupId"] == backup_id
    assert "250 rows" in conditions(obj)["Verified"]["message"]
    assert conditions(obj)["Ready"]["status"] == "True"
    # The Job itself ends too (KWOK completes its pod), and the one-off backup says so.
    wait_for(
        lambda: (
            "Succeeded" in cluster.kubectl("get", "cleobackup", "nightly", "-n", NAMESPACE).stdout
        ),
        timeout=60,
        what="the one-off backup's phase to read Succeeded",
    )
    # The password of the tenant's role never reached status or the operator's log.
    secret = kubectl_json(cluster, "get", "secret", "cleo-database", "-n", NAMESPACE)
    password = base64.b64decode(secret["data"]["PGPASSWORD"]).decode()
    assert password not in str(status)
    assert password not in operator_process.all_logs()

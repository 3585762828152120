"""Drills: the latest verified backup restores within the objectives; production is untouched.

The backups are real (``run_backup`` from the tenant's database into a signature-checking
S3 server, ``verify_backup`` marks one verified), the CleoBackup is a real object the
operator's ``ClusterBackupSource`` reads (its S3 credentials Secret, the tenant keyring
Secret), and the scratch restore runs on a third server (a streaming standby is
read-only).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.object_store import ObjectStoreStorage
from cleo_operator.backup.restore import verify_backup
from cleo_operator.backup.runner import run_backup
from cleo_operator.crypto import Keyring
from cleo_operator.data.tenant_db import tenant_database_name
from cleo_operator.failover.drill import ClusterBackupSource
from cleo_operator.kube.client import KubeClient
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer
from tests.integration import s3_support
from tests.integration.failover_support import (
    SCRATCH,
    STANDBY,
    Setting,
    condition,
    run_until,
    steps,
    tenant_setting,
)
from tests.integration.s3_support import S3Server

pytestmark = RECONCILERS_ALONE

s3_server = s3_support.s3_server

DRILL_STEPS = ["preflight", "check-lag", "restore", "check-standby"]


@pytest.fixture
def setting(
    kube: KubeClient,
    crds_installed: None,
    postgres_replica_pair: tuple[PostgresServer, PostgresServer],
    postgres_server: PostgresServer,
) -> Iterator[Setting]:
    del crds_installed
    with tenant_setting(kube, postgres_replica_pair, extra_sites={SCRATCH: postgres_server}) as (
        made
    ):
        yield made


def production(setting: Setting) -> dict[str, object]:
    """Everything of production a drill must leave as it was."""
    dep = setting.deployment()
    return {
        "secret": setting.secret()["metadata"]["resourceVersion"],
        "deployment": dep["metadata"]["resourceVersion"],
        "tenant": setting.tenant_annotations(),
        "login": setting.role_can_login(setting.primary),
        "standby": setting.standby.execute("SELECT pg_is_in_recovery()")[0][0],
        "primary databases": setting.primary.execute(
            "SELECT array_agg(datname ORDER BY datname) FROM pg_database"
        )[0][0],
    }


def scratch_databases(server: PostgresServer) -> list[str]:
    rows = server.execute("SELECT datname FROM pg_database WHERE datname LIKE 'cleo_verify_%'")
    return sorted(r[0] for r in rows)


def backups_on_s3(
    setting: Setting, server: S3Server, keyring: Keyring
) -> tuple[ObjectStoreStorage, ConnectionInfo]:
    """A bucket, its CleoBackup, credentials and keyring Secrets, as a platform team sets up."""
    storage = server.fresh_storage(prefix="drill")

    def secret(name: str, data: dict[str, bytes]) -> None:
        setting.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": setting.namespace},
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            }
        )

    secret(
        "s3-credentials",
        {
            "AWS_ACCESS_KEY_ID": server.credentials.access_key_id.encode(),
            "AWS_SECRET_ACCESS_KEY": server.credentials.secret_access_key.encode(),
        },
    )
    secret("cleo-keyring", keyring.to_secret_data())
    setting.kube.create(
        {
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": "CleoBackup",
            "metadata": {"name": "nightly", "namespace": setting.namespace},
            "spec": {
                "tenant": setting.tenant,
                "schedule": "0 3 * * *",
                "destination": {
                    "type": "s3",
                    "s3": {
                        "bucket": server.bucket,
                        "prefix": storage.store.prefix,
                        "endpoint": server.endpoint,
                        "credentialsSecret": "s3-credentials",
                    },
                },
            },
        }
    )
    source = ConnectionInfo(
        host=setting.primary.host,
        port=setting.primary.port,
        dbname=tenant_database_name(setting.tenant),
        user=setting.primary.superuser,
        password=setting.primary.password,
        sslmode="disable",
    )
    return storage, source


def test_a_drill_restores_the_latest_verified_backup_and_touches_nothing_of_production(
    setting: Setting, s3_server: S3Server, postgres_server: PostgresServer
) -> None:
    keyring = Keyring.generate(datetime.now(UTC))
    storage, source = backups_on_s3(setting, s3_server, keyring)
    setting.write_rows(2000)
    first = run_backup(source=source, tenant=setting.tenant, storage=storage, keyring=keyring)
    scratch_admin = ConnectionInfo(
        host=postgres_server.host,
        port=postgres_server.port,
        dbname="postgres",
        user=postgres_server.superuser,
        password=postgres_server.password,
        sslmode="disable",
    )
    with setting.pools() as pools:
        reconciler = setting.reconciler(
            pools, backups=ClusterBackupSource(setting.kube), drill_site=SCRATCH
        )

        # Without a verified backup, the drill says so, and still changes nothing.
        before = production(setting)
        refused = run_until(reconciler, setting, setting.create_failover("Drill"))
        assert refused["status"]["phase"] == "Failed"
        assert condition(refused, "Succeeded")["reason"] == "NoVerifiedBackup"
        assert production(setting) == before

        verified = verify_backup(
            storage=storage,
            backup_id=first.backup_id,
            keyring=keyring,
            admin=scratch_admin,
            tenant=setting.tenant,
        )
        assert verified.passed, verified.message
        # A newer backup that nobody verified is not the one a drill trusts.
        setting.write_rows(500)
        run_backup(source=source, tenant=setting.tenant, storage=storage, keyring=keyring)

        scratch_before = scratch_databases(postgres_server)
        before = production(setting)
        name = setting.create_failover("Drill", rtoSeconds=120, rpoSeconds=30)
        obj = run_until(reconciler, setting, name)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    recorded = steps(obj)
    assert list(recorded) == DRILL_STEPS
    assert all(s["state"] == "Succeeded" for s in recorded.values()), recorded
    restore = recorded["restore"]["message"]
    assert first.backup_id in restore
    assert "2000 rows match" in restore
    assert f"site {SCRATCH!r}" in restore
    assert 0 < status["measuredRTOSeconds"] < 120
    assert status["estimatedRPOBytes"] >= 0
    assert "logged in" in recorded["check-standby"]["message"]
    assert f"site {STANDBY!r}" in recorded["check-standby"]["message"]
    objectives = condition(obj, "ObjectivesMet")
    assert objectives["status"] == "True"
    assert "would be within" in objectives["message"]
    assert "newPrimary" not in status
    # Nothing of production changed; the scratch database is gone again.
    assert production(setting) == before
    assert scratch_databases(postgres_server) == scratch_before
    assert setting.tenant_can_write(setting.primary)

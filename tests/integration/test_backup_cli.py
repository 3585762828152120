"""The CronJob's run end to end: back up, verify, prune, report; restore from the CLI."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cleo_operator.backup.commands import (
    backup_list,
    backup_run,
    load_keyring_dir,
    storage_from_destination,
)
from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.report import exit_code, write_report
from cleo_operator.backup.restore import restore_archive
from cleo_operator.backup.retention import RetentionPolicy
from cleo_operator.crypto import Keyring
from tests.harness.postgres import PostgresServer
from tests.integration.backup_support import (
    create_database,
    drop_database,
    table_contents,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def databases(postgres_server: PostgresServer) -> Iterator[tuple[str, str]]:
    source, target = f"bk_src_{secrets.token_hex(4)}", f"bk_dst_{secrets.token_hex(4)}"
    create_database(postgres_server, source)
    create_database(postgres_server, target)
    yield source, target
    drop_database(postgres_server, source)
    drop_database(postgres_server, target)


def test_scheduled_runs_verify_prune_and_report(
    postgres_server: PostgresServer, databases: tuple[str, str], tmp_path: Path
) -> None:
    source, target = databases
    postgres_server.execute(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);"
        "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 500) g;",
        dbname=source,
    )
    keyring_dir = tmp_path / "keyring"
    keyring_dir.mkdir()
    for name, value in Keyring.generate(datetime.now(UTC)).to_secret_data().items():
        (keyring_dir / name).write_bytes(value)
    keyring = load_keyring_dir(keyring_dir)
    storage = storage_from_destination(str(tmp_path / "volume" / "acme"))
    login = ConnectionInfo.from_environment(
        {
            "PGHOST": postgres_server.host,
            "PGPORT": str(postgres_server.port),
            "PGDATABASE": source,
            "PGUSER": postgres_server.superuser,
            "PGPASSWORD": postgres_server.password,
        }
    )
    admin = login.with_dbname("postgres")
    policy = RetentionPolicy(keep_last=2)
    start = datetime.now(UTC)
    reports = []
    for day in range(4):  # four daily runs, the notes growing each day
        postgres_server.execute(
            "INSERT INTO notes VALUES (%s, 'day ' || %s)", (1000 + day, day), dbname=source
        )
        report = backup_run(
            tenant="acme",
            source=login,
            storage=storage,
            keyring=keyring,
            retention=policy,
            verify_admin=admin,
            now=start + timedelta(days=day),
        )
        assert report["outcome"] == "Succeeded", report
        assert exit_code(report) == 0
        assert report["verification"]["passed"] is True
        reports.append(report)
    # Runs 3 and 4 each pruned the oldest, leaving the newest two.
    assert reports[0]["prune"]["deleted"] == []
    assert reports[2]["prune"]["deleted"] == [reports[0]["backup"]["backupId"]]
    listed = backup_list(storage=storage, tenant="acme", keyring=keyring)
    assert [b["backupId"] for b in listed] == [r["backup"]["backupId"] for r in reports[2:]]
    assert all(b["verified"] for b in listed)
    # Without the keyring no verification record can be trusted: "verified" is unknown.
    assert [b["verified"] for b in backup_list(storage=storage, tenant="acme")] == [None, None]
    assert [b["rows"] for b in listed] == [503, 504]

    termination = tmp_path / "termination-log"
    write_report(reports[-1], termination)
    assert json.loads(termination.read_text())["backup"]["rows"] == 504

    restored = restore_archive(
        allow_privileged_target=True,  # restored as the test's superuser: its own archive
        backup_id=listed[0]["backupId"],
        target=login.with_dbname(target),
        storage=storage,
        keyring=keyring,
        tenant="acme",
    )
    assert restored.rows == 503
    contents = table_contents(postgres_server, target)
    assert len(contents["public.notes"]) == 503


def test_a_failed_run_reports_and_keeps_old_backups(
    postgres_server: PostgresServer, databases: tuple[str, str], tmp_path: Path
) -> None:
    source, _ = databases
    keyring = Keyring.generate(datetime.now(UTC))
    storage = storage_from_destination(str(tmp_path))
    login = ConnectionInfo.from_dsn(postgres_server.dsn(source))
    good = backup_run(tenant="acme", source=login, storage=storage, keyring=keyring)
    assert good["outcome"] == "Succeeded"
    drop_database(postgres_server, source)  # the database is gone: the next run fails
    bad = backup_run(
        tenant="acme",
        source=login,
        storage=storage,
        keyring=keyring,
        retention=RetentionPolicy(keep_last=0),
    )
    assert bad["outcome"] == "Failed"
    assert bad["reason"] == "DatabaseUnavailable"
    assert f'database "{source}" does not exist' in bad["message"]
    assert exit_code(bad) == 1
    assert "prune" not in bad  # no pruning after a failed backup
    assert len(backup_list(storage=storage, tenant="acme")) == 1

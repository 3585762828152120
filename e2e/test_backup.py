"""`cleo-operator backup ...` and `cleo-operator restore` as people and the CronJob run them:
separate processes of the real entry point, a real PostgreSQL server, passwords only in the
environment. Scheduled runs, retention, verification, restore, and what is refused (a
target that is not empty, a tampered archive, a wrong password) with the exit codes and
messages a script or a person acts on.

The CronJob's side (its Jobs on the local control plane, the runner's identity, status) is
tested in tests/integration/test_backup_cluster*.py.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cleo_operator.crypto import Keyring
from tests.harness.postgres import PostgresServer, find_postgres_bindir

pytestmark = pytest.mark.e2e


@dataclass
class Tenant:
    """A tenant's database and role, and the files the runner would have mounted."""

    name: str
    database: str
    password: str
    keyring_dir: Path
    destination: Path
    server: PostgresServer

    def login_env(self, password: str | None = None) -> dict[str, str]:
        """libpq's variables, as the pod gets them from the tenant's database Secret."""
        return {
            "PGHOST": self.server.host,
            "PGPORT": str(self.server.port),
            "PGDATABASE": self.database,
            "PGUSER": self.database,
            "PGPASSWORD": self.password if password is None else password,
            "PGSSLMODE": "disable",
        }

    def execute(self, query: str, params: tuple[Any, ...] | None = None) -> None:
        """As the tenant's own role, which owns its database (as the operator sets it up)."""
        dsn = self.server.dsn(self.database, user=self.database, password=self.password)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(query, params)

    def rows(self) -> int:
        result = self.server.execute("SELECT count(*) FROM notes", dbname=self.database)
        return int(result[0][0])


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """One `cleo-operator` process; no environment of the test process leaks into it."""
    base = {
        "PATH": os.pathsep.join(
            [str(find_postgres_bindir()), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
        ),
        "HOME": str(cwd or Path.cwd()),
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        [sys.executable, "-m", "cleo_operator.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
    )


@pytest.fixture
def tenant(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Tenant]:
    name = f"e2e-{secrets.token_hex(3)}"
    database = "cleo_" + name.replace("-", "_")
    password = secrets.token_urlsafe(24)
    ident = sql.Identifier(database)
    postgres_server.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(password))
    )
    postgres_server.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident, ident))
    keyring_dir = tmp_path / "keyring"
    keyring_dir.mkdir()
    for key, value in (
        Keyring.generate(datetime.datetime.now(datetime.UTC)).to_secret_data().items()
    ):
        (keyring_dir / key).write_bytes(value)
    made = Tenant(
        name=name,
        database=database,
        password=password,
        keyring_dir=keyring_dir,
        destination=tmp_path / "volume" / name,
        server=postgres_server,
    )
    made.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
    made.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 200) g")
    yield made
    for statement in ("DROP DATABASE IF EXISTS {} WITH (FORCE)", "DROP ROLE IF EXISTS {}"):
        postgres_server.execute(sql.SQL(statement).format(ident))


@pytest.fixture
def empty_database(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"e2e_target_{secrets.token_hex(3)}"
    postgres_server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    postgres_server.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


def run_backup(tenant: Tenant, tmp_path: Path, *extra: str, password: str | None = None) -> Any:
    report = tmp_path / f"report-{secrets.token_hex(3)}.json"
    done = cli(
        "backup",
        "run",
        "--tenant",
        tenant.name,
        "--destination",
        str(tenant.destination),
        "--keyring-dir",
        str(tenant.keyring_dir),
        "--report",
        str(report),
        *extra,
        env=tenant.login_env(password),
        cwd=tmp_path,
    )
    written = json.loads(report.read_text()) if report.exists() else None
    return done, written


def listing(tenant: Tenant) -> list[dict[str, Any]]:
    done = cli(
        "backup",
        "list",
        "--destination",
        str(tenant.destination),
        "--tenant",
        tenant.name,
        "--keyring-dir",
        str(tenant.keyring_dir),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def restore_cli(
    tenant: Tenant,
    server: PostgresServer,
    backup_id: str,
    dbname: str,
    cwd: Path,
    *extra: str,
) -> subprocess.CompletedProcess[str]:
    """`restore` of the tenant's archive `backup_id` into `dbname`, the password in PGPASSWORD."""
    return cli(
        "restore",
        "--archive",
        backup_id,
        "--into",
        admin_dsn(server, dbname),
        "--allow-privileged-target",  # the test superuser restores its own archive
        "--destination",
        str(tenant.destination),
        "--keyring-dir",
        str(tenant.keyring_dir),
        *extra,
        env={"PGPASSWORD": server.password},
        cwd=cwd,
    )


def admin_dsn(server: PostgresServer, dbname: str = "postgres") -> str:
    # No password here: a command line is visible to every user of the machine.
    return f"host={server.host} port={server.port} dbname={dbname} user={server.superuser}"


def test_runs_keep_what_retention_says_and_a_verified_backup_restores(
    tenant: Tenant, postgres_server: PostgresServer, empty_database: str, tmp_path: Path
) -> None:
    counts = []
    for day in range(3):
        tenant.execute("INSERT INTO notes VALUES (%s, 'day ' || %s)", (1000 + day, day))
        counts.append(tenant.rows())
        done, report = run_backup(tenant, tmp_path, "--keep-last", "2")
        assert done.returncode == 0, done.stderr
        assert report["outcome"] == "Succeeded"
        assert json.loads(done.stdout) == report  # stdout says what the report says
        assert tenant.password not in done.stdout + done.stderr
    backups = listing(tenant)
    assert len(backups) == 2  # keep-last 2 pruned the first after the third run
    assert [b["rows"] for b in backups] == counts[1:]
    newest = backups[-1]["backupId"]

    verify = cli(
        "backup",
        "verify",
        "--destination",
        str(tenant.destination),
        "--keyring-dir",
        str(tenant.keyring_dir),
        "--archive",
        newest,
        "--admin",
        admin_dsn(postgres_server),
        "--tenant",
        tenant.name,
        env={"PGPASSWORD": postgres_server.password},
        cwd=tmp_path,
    )
    assert verify.returncode == 0, verify.stderr
    verdict = json.loads(verify.stdout)
    assert (verdict["passed"], verdict["reason"]) == (True, "Verified")
    assert [b["verified"] for b in listing(tenant)] == [False, True]

    restored = restore_cli(
        tenant, postgres_server, newest, empty_database, tmp_path, "--no-privileges"
    )
    assert restored.returncode == 0, restored.stderr
    summary = json.loads(restored.stdout)
    assert (summary["backupId"], summary["tenant"], summary["rows"]) == (
        newest,
        tenant.name,
        counts[-1],
    )
    rows = postgres_server.execute("SELECT count(*) FROM notes", dbname=empty_database)
    assert rows[0][0] == counts[-1]

    # A second restore into the same (now full) database is refused, and changes nothing.
    again = restore_cli(tenant, postgres_server, newest, empty_database, tmp_path)
    assert again.returncode == 1
    assert "TargetNotEmpty" in again.stderr
    rows = postgres_server.execute("SELECT count(*) FROM notes", dbname=empty_database)
    assert rows[0][0] == counts[-1]


def test_a_tampered_archive_is_refused_before_the_target_is_touched(
    tenant: Tenant, postgres_server: PostgresServer, empty_database: str, tmp_path: Path
) -> None:
    done, report = run_backup(tenant, tmp_path)
    assert done.returncode == 0, done.stderr
    backup_id = report["backup"]["backupId"]
    archive = tenant.destination / f"{backup_id}.archive"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    restored = restore_cli(tenant, postgres_server, backup_id, empty_database, tmp_path)
    assert restored.returncode == 1
    assert "ArchiveCorrupt" in restored.stderr
    tables = postgres_server.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", dbname=empty_database
    )
    assert tables[0][0] == 0


def test_a_wrong_password_fails_the_run_with_a_reason_and_no_password(
    tenant: Tenant, tmp_path: Path
) -> None:
    wrong = "wrong-" + secrets.token_urlsafe(16)
    done, report = run_backup(tenant, tmp_path, "--keep-last", "1", password=wrong)
    assert done.returncode == 1
    assert (report["outcome"], report["reason"]) == ("Failed", "DatabaseUnavailable")
    assert "prune" not in report  # a failed run never prunes
    for text in (done.stdout, done.stderr, json.dumps(report)):
        assert wrong not in text
        assert tenant.password not in text
    assert listing(tenant) == []
    # The next run, with the right login, succeeds: a failure stops nothing.
    done, report = run_backup(tenant, tmp_path, "--keep-last", "1")
    assert done.returncode == 0, done.stderr
    assert len(listing(tenant)) == 1


def test_prune_says_what_it_would_delete_and_then_deletes_only_that(
    tenant: Tenant, tmp_path: Path
) -> None:
    for _ in range(3):
        done, _report = run_backup(tenant, tmp_path)
        assert done.returncode == 0, done.stderr
    before = [b["backupId"] for b in listing(tenant)]
    common = (
        "--destination",
        str(tenant.destination),
        "--tenant",
        tenant.name,
        "--keyring-dir",
        str(tenant.keyring_dir),
    )
    dry = cli("backup", "prune", *common, "--keep-last", "1", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["deleted"] == before[:2]
    assert json.loads(dry.stdout)["dryRun"] is True
    assert [b["backupId"] for b in listing(tenant)] == before
    real = cli("backup", "prune", *common, "--keep-last", "1", cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    assert [b["backupId"] for b in listing(tenant)] == before[2:]
    refused = cli("backup", "prune", *common, cwd=tmp_path)
    assert refused.returncode == 1
    assert "no retention rule given" in refused.stderr


def test_a_run_without_a_keyring_fails_saying_where_to_mount_it(
    tenant: Tenant, tmp_path: Path
) -> None:
    missing = tmp_path / "not-mounted"
    done = cli(
        "backup",
        "run",
        "--tenant",
        tenant.name,
        "--destination",
        str(tenant.destination),
        "--keyring-dir",
        str(missing),
        env=tenant.login_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["reason"] == "KeyringUnavailable"
    assert str(missing) in report["message"]

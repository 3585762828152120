"""Backups on a real PostgreSQL server: back up, restore, compare; the snapshot; the password."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.contents import prepare_session, table_stats
from cleo_operator.backup.manifest import Manifest
from cleo_operator.backup.restore import restore_archive, verify_backup
from cleo_operator.backup.runner import run_backup
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import Keyring
from cleo_operator.data.pool import SitePools
from cleo_operator.data.tenant_db import (
    ensure_tenant_database,
    tenant_database_name,
    tenant_role_name,
)
from cleo_operator.kube.audit import AUDIT_LOGGER
from tests.harness.postgres import PostgresServer
from tests.integration.backup_support import (
    create_database,
    create_sample_database,
    database_size,
    drop_database,
    table_contents,
    user_relations,
)
from tests.unit.crypto.secrets_check import assert_no_secret

pytestmark = pytest.mark.postgres


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate(datetime.now(UTC))


@pytest.fixture
def scratch_names(postgres_server: PostgresServer) -> Iterator[list[str]]:
    """Database names a test creates; dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        drop_database(postgres_server, name)


def new_db(server: PostgresServer, names: list[str], *, owner: str | None = None) -> str:
    name = f"bk_{secrets.token_hex(5)}"
    names.append(name)
    create_database(server, name, owner=owner)
    return name


def admin(server: PostgresServer, dbname: str = "postgres") -> ConnectionInfo:
    return ConnectionInfo.from_dsn(server.dsn(dbname))


@dataclass(frozen=True)
class Tenant:
    """A provisioned tenant: its name, database, role and the role's login."""

    name: str
    database: str
    role: str
    password: str
    login: ConnectionInfo


@pytest.fixture
def tenant(postgres_site_pools: SitePools, tenant_name: str) -> Tenant:
    """A tenant database made the way the operator makes it, and the tenant's login to it."""
    # Characters that need escaping in a passfile and quoting in SQL, on purpose.
    password = "Pa55:'" + secrets.token_urlsafe(16) + "\\@"
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=10
    )
    database, role = tenant_database_name(tenant_name), tenant_role_name(tenant_name)
    login = ConnectionInfo.for_site(
        postgres_site_pools.site("main"), dbname=database, user=role, password=password
    )
    return Tenant(name=tenant_name, database=database, role=role, password=password, login=login)


def test_backup_and_restore_give_equal_contents(
    postgres_server: PostgresServer,
    scratch_names: list[str],
    keyring: Keyring,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = new_db(postgres_server, scratch_names)
    create_sample_database(postgres_server, source)
    storage = LocalStorage(tmp_path / "backups")

    result = run_backup(
        source=admin(postgres_server, source), tenant="acme", storage=storage, keyring=keyring
    )

    manifest = result.manifest
    assert database_size(postgres_server, source) > 8 << 20  # a few MB of rows
    assert result.plaintext_size > 1 << 20  # pg_dump compresses them
    assert manifest.tables.keys() == {
        '"Archive"."Old Events"',
        "public.empty_table",
        "public.measurements_2025",
        "public.measurements_2026",
        "public.memories",
        "public.people",
    }
    assert manifest.tables["public.people"].rows == 4000
    assert manifest.tables["public.empty_table"].rows == 0
    assert manifest.tables["public.measurements_2025"].rows > 0
    assert manifest.tables["public.measurements_2026"].rows > 0
    assert manifest.database == source
    record = result.as_record()
    assert record.archive.endswith(result.archive)
    assert record.size_bytes == result.archive_size
    assert record.to_api()["time"] == result.to_report()["startTime"]
    assert manifest.server_version_num >= 150000
    # On disk: exactly the archive and its manifest, and the manifest reads back the same.
    assert sorted(os.listdir(storage.root)) == sorted([result.archive, result.manifest_object])
    stored = Manifest.from_json((storage.root / result.manifest_object).read_bytes(), source="test")
    assert stored == manifest
    # The archive is ciphertext: the dump's magic and the sample text are not in it.
    archive_bytes = (storage.root / result.archive).read_bytes()
    assert archive_bytes.startswith(b"CLEOSTRM")
    assert b"PGDMP" not in archive_bytes
    assert b"person 1" not in archive_bytes

    target = new_db(postgres_server, scratch_names)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    restored = restore_archive(
        allow_privileged_target=True,  # restored as the test's superuser: its own archive
        storage=storage,
        backup_id=result.backup_id,
        keyring=keyring,
        target=admin(postgres_server, target),
        tenant="acme",
        actor="alice (command line)",
    )
    assert restored.rows == manifest.total_rows
    # The restore is on the audit trail: who, what, where; no password.
    (line,) = [r for r in caplog.records if getattr(r, "audit", False)]
    assert (line.__dict__["action"], line.__dict__["actor"]) == ("Restored", "alice (command line)")
    assert result.backup_id in line.getMessage()
    assert target in line.getMessage()
    assert postgres_server.password not in line.getMessage()
    caplog.clear()
    assert table_contents(postgres_server, target) == table_contents(postgres_server, source)
    # Views, indexes and the sequence came back too.
    assert user_relations(postgres_server, target) == user_relations(postgres_server, source)
    # And the manifest's checksums match the restored copy, computed afresh.
    with psycopg.connect(postgres_server.dsn(target), autocommit=True) as conn:
        prepare_session(conn)
        assert table_stats(conn) == dict(manifest.tables)

    verdict = verify_backup(
        storage=storage,
        backup_id=result.backup_id,
        keyring=keyring,
        admin=admin(postgres_server),
        tenant="acme",
    )
    assert verdict.passed, verdict.message
    assert verdict.reason == "Verified"
    # Its scratch restore is not a restore of the trail.
    assert not [r for r in caplog.records if getattr(r, "audit", False)]
    assert verdict.tables_checked == 6
    assert verdict.rows_checked == manifest.total_rows
    # The scratch database is gone, and the verdict is stored beside the backup.
    leftover = postgres_server.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'cleo\\_verify\\_%'"
    )
    assert leftover == []
    record = json.loads((storage.root / f"{result.backup_id}.verification.json").read_bytes())
    assert record["passed"] is True
    assert record["backupId"] == result.backup_id


def test_checksums_tell_different_contents_apart(
    postgres_server: PostgresServer, scratch_names: list[str]
) -> None:
    # Same row count, one value changed: the checksum must differ (and be order-blind).
    a = new_db(postgres_server, scratch_names)
    b = new_db(postgres_server, scratch_names)
    for db, rows in ((a, [(1, "x"), (2, "y"), (3, "z")]), (b, [(3, "z"), (2, "y"), (1, "x")])):
        postgres_server.execute("CREATE TABLE t (n int, s text)", dbname=db)
        for row in rows:
            postgres_server.execute("INSERT INTO t VALUES (%s, %s)", row, dbname=db)

    def stats(db: str) -> dict[str, object]:
        with psycopg.connect(postgres_server.dsn(db), autocommit=True) as conn:
            prepare_session(conn)
            return dict(table_stats(conn))

    assert stats(a) == stats(b)  # same rows in another order
    postgres_server.execute("UPDATE t SET s = 'Z' WHERE n = 3", dbname=b)
    assert stats(a) != stats(b)
    assert stats(a)["public.t"].rows == stats(b)["public.t"].rows  # type: ignore[attr-defined]


def test_a_tenant_backs_up_its_own_database_as_its_own_role(
    postgres_server: PostgresServer,
    tenant: Tenant,
    scratch_names: list[str],
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    # The CronJob's pod has the tenant's credentials only, not the site admin's.
    database, role = tenant.database, tenant.role
    create_sample_database(
        postgres_server, database, people=300, memories=600, owner=role, password=tenant.password
    )
    source = tenant.login
    storage = LocalStorage(tmp_path)
    result = run_backup(source=source, tenant=tenant.name, storage=storage, keyring=keyring)
    assert result.manifest.tables["public.people"].rows == 300

    # Restore into a new database for the same tenant; what is restored is the tenant's.
    target = new_db(postgres_server, scratch_names, owner=role)
    restore_archive(
        allow_privileged_target=True,  # restored as the test's superuser: its own archive
        storage=storage,
        backup_id=result.backup_id,
        keyring=keyring,
        target=admin(postgres_server, target),
        tenant=tenant.name,
        role=role,
    )
    owners = postgres_server.execute(
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'Archive')",
        dbname=target,
    )
    assert owners == [(role,)]
    assert table_contents(postgres_server, target) == table_contents(postgres_server, database)


def test_the_manifest_describes_exactly_the_snapshot_pg_dump_dumped(
    postgres_server: PostgresServer,
    scratch_names: list[str],
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    # While the backup runs, a writer keeps inserting rows and moving money between two
    # accounts. Counting in another snapshot than pg_dump's would record other row counts
    # than the archive holds, or a total that never existed.
    source = new_db(postgres_server, scratch_names)
    create_sample_database(postgres_server, source, people=6000, memories=30000)
    postgres_server.execute(
        "CREATE TABLE ledger (id serial PRIMARY KEY, note text);"
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint);"
        "INSERT INTO accounts VALUES (1, 1000000), (2, 1000000);",
        dbname=source,
    )
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        with psycopg.connect(postgres_server.dsn(source), autocommit=True) as conn:
            while not stop.is_set():
                with conn.transaction():
                    conn.execute("INSERT INTO ledger (note) VALUES ('during the backup')")
                    conn.execute("UPDATE accounts SET balance = balance - 7 WHERE id = 1")
                    conn.execute("UPDATE accounts SET balance = balance + 7 WHERE id = 2")
                writes += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while writes < 20:  # the writer is really running before the backup starts
            time.sleep(0.01)
        storage = LocalStorage(tmp_path)
        result = run_backup(
            source=admin(postgres_server, source), tenant="acme", storage=storage, keyring=keyring
        )
    finally:
        stop.set()
        thread.join()
    recorded = result.manifest.tables["public.ledger"].rows
    assert recorded >= 20

    target = new_db(postgres_server, scratch_names)
    restore_archive(
        allow_privileged_target=True,  # restored as the test's superuser: its own archive
        storage=storage,
        backup_id=result.backup_id,
        keyring=keyring,
        target=admin(postgres_server, target),
    )
    assert postgres_server.execute("SELECT count(*) FROM ledger", dbname=target) == [(recorded,)]
    assert postgres_server.execute("SELECT sum(balance) FROM accounts", dbname=target) == [
        (2000000,)
    ]
    # Rows kept arriving while the backup ran, so the snapshot was really put to the test.
    assert postgres_server.execute("SELECT count(*) FROM ledger", dbname=source)[0][0] > recorded
    verdict = verify_backup(
        storage=storage, backup_id=result.backup_id, keyring=keyring, admin=admin(postgres_server)
    )
    assert verdict.passed, verdict.message


def test_the_password_never_reaches_argv_and_its_passfile_vanishes(
    tenant: Tenant, keyring: Keyring, tmp_path: Path
) -> None:
    password = tenant.password
    # A pg_dump that records how it was called, then runs the real one.
    real = shutil.which("pg_dump")
    assert real is not None
    calls = tmp_path / "calls"
    shim = tmp_path / "pg_dump"
    shim.write_text(
        "#!/bin/sh\n"
        f'{{ echo "--- argv"; printf "%s\\n" "$@"; echo "--- env"; env; }} >> "{calls}"\n'
        f'[ -n "$PGPASSFILE" ] && cat "$PGPASSFILE" >> "{calls}.passfile"\n'
        f'echo "$PGPASSFILE" >> "{calls}.passfile-path"\n'
        f'exec "{real}" "$@"\n'
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    os.environ["PGPASSWORD"] = "inherited-" + password  # must not leak to the child either
    try:
        result = run_backup(
            source=tenant.login,
            tenant=tenant.name,
            storage=LocalStorage(tmp_path / "backups"),
            keyring=keyring,
            pg_dump=shim,
        )
    finally:
        del os.environ["PGPASSWORD"]
    recorded = calls.read_text()
    assert "--snapshot=" in recorded
    assert password not in recorded  # neither in argv nor in the environment
    assert "PGPASSWORD" not in recorded
    assert f"PGUSER={tenant.role}" in recorded
    # The passfile held it (escaped as that format wants), and was removed afterwards.
    assert (
        password.replace("\\", "\\\\").replace(":", "\\:")
        in (tmp_path / "calls.passfile").read_text()
    )
    for path in (tmp_path / "calls.passfile-path").read_text().split():
        assert not Path(path).exists()
    assert password not in repr(result)
    assert password not in json.dumps(result.to_report())


def test_metrics_record_success_and_failure(
    postgres_server: PostgresServer,
    scratch_names: list[str],
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    tenant = f"m-{secrets.token_hex(3)}"
    source = new_db(postgres_server, scratch_names)
    postgres_server.execute(
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g", dbname=source
    )
    before = time.time()
    result = run_backup(
        source=admin(postgres_server, source),
        tenant=tenant,
        storage=LocalStorage(tmp_path),
        keyring=keyring,
    )

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"tenant": tenant, **labels})

    assert sample("cleo_operator_backups_total") == 1
    last = sample("cleo_operator_backup_last_success_timestamp_seconds")
    assert last is not None
    assert last >= before - 1
    archive_size = sample("cleo_operator_backup_last_size_bytes", archive_kind="archive")
    assert archive_size == result.archive_size
    assert sample("cleo_operator_backup_last_duration_seconds") == result.duration_seconds

    broken = ConnectionInfo.from_dsn(postgres_server.dsn(source, password="wrong"))
    with pytest.raises(Exception, match="password authentication failed") as caught:
        run_backup(source=broken, tenant=tenant, storage=LocalStorage(tmp_path), keyring=keyring)
    assert_no_secret(str(caught.value), *(k.material for k in keyring.keys))
    failures = sample("cleo_operator_backup_failures_total", reason="DatabaseUnavailable")
    assert failures == 1

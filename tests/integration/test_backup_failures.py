"""Backups that fail leave nothing behind and say why; memory stays flat on a large database."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import DumpFailed, SourceUnavailable
from cleo_operator.backup.runner import run_backup
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import Keyring
from tests.harness.postgres import PostgresServer
from tests.integration.backup_support import create_database, drop_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate(datetime.now(UTC))


@pytest.fixture
def source(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"bk_src_{secrets.token_hex(4)}"
    create_database(postgres_server, name)
    yield name
    drop_database(postgres_server, name)


def everything_in(folder: Path) -> list[str]:
    """Every file under `folder`, hidden temporary files included."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_table_the_role_cannot_read_fails_the_backup_cleanly(
    postgres_server: PostgresServer, source: str, keyring: Keyring, tmp_path: Path
) -> None:
    role = f"limited_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    postgres_server.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    try:
        postgres_server.execute(
            "CREATE TABLE visible (x int); CREATE TABLE hidden (secret text);"
            "INSERT INTO hidden VALUES ('x');",
            dbname=source,
        )
        postgres_server.execute(
            sql.SQL("GRANT SELECT ON visible TO {}").format(sql.Identifier(role)), dbname=source
        )
        login = ConnectionInfo.from_dsn(postgres_server.dsn(source, user=role, password=password))
        with pytest.raises(DumpFailed, match="permission denied for table hidden") as caught:
            run_backup(source=login, tenant="acme", storage=LocalStorage(tmp_path), keyring=keyring)
        assert password not in str(caught.value)
        assert everything_in(tmp_path) == []
    finally:
        drop_database(postgres_server, source)
        postgres_server.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_failing_pg_dump_leaves_no_archive(
    postgres_server: PostgresServer, source: str, keyring: Keyring, tmp_path: Path
) -> None:
    # A pg_dump that writes half a dump and then dies, as one killed by the OOM killer.
    postgres_server.execute(
        "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g", dbname=source
    )
    dying = tmp_path / "bin" / "pg_dump"
    dying.parent.mkdir()
    dying.write_text(
        "#!/bin/sh\n"
        'case "$1" in --version) exec pg_dump --version;; esac\n'
        'pg_dump "$@" | head -c 100000\n'
        "echo 'pg_dump: error: out of memory' >&2\n"
        "exit 1\n"
    )
    dying.chmod(0o755)
    storage_root = tmp_path / "store"
    with pytest.raises(DumpFailed, match=r"failed \(exit 1\): pg_dump: error: out of memory"):
        run_backup(
            source=ConnectionInfo.from_dsn(postgres_server.dsn(source)),
            tenant="acme",
            storage=LocalStorage(storage_root),
            keyring=keyring,
            pg_dump=dying,
        )
    assert everything_in(storage_root) == []


def test_missing_tools_and_unreachable_servers_say_what_to_do(
    postgres_server: PostgresServer, source: str, keyring: Keyring, tmp_path: Path
) -> None:
    info = ConnectionInfo.from_dsn(postgres_server.dsn(source))
    with pytest.raises(DumpFailed, match=r"cannot run pg_dump at .*install the PostgreSQL client"):
        run_backup(
            source=info,
            tenant="acme",
            storage=LocalStorage(tmp_path),
            keyring=keyring,
            pg_dump=tmp_path / "no-such-pg_dump",
        )
    wrong = "Wr0ng-" + secrets.token_urlsafe(12)
    with pytest.raises(SourceUnavailable, match="password authentication failed") as caught:
        run_backup(
            source=info.with_login(user=info.user, password=wrong),
            tenant="acme",
            storage=LocalStorage(tmp_path),
            keyring=keyring,
        )
    assert wrong not in str(caught.value)
    assert f"database {source!r} on 127.0.0.1:{postgres_server.port}" in str(caught.value)
    assert everything_in(tmp_path) == []


# The backup runs in a child process that may not grow any file past 2 MiB (RLIMIT_FSIZE):
# the kernel then fails the archive's write with EFBIG exactly where a full volume fails
# it with ENOSPC. The limit is inherited by pg_dump, which writes only to a pipe.
_FULL_DISK_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from datetime import UTC, datetime
    from cleo_operator.backup.connection import ConnectionInfo
    from cleo_operator.backup.errors import BackupError
    from cleo_operator.backup.runner import run_backup
    from cleo_operator.backup.storage import LocalStorage
    from cleo_operator.crypto import Keyring
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))
    try:
        run_backup(
            source=ConnectionInfo.from_dsn(sys.stdin.read()),
            tenant="acme",
            storage=LocalStorage(sys.argv[1]),
            keyring=Keyring.generate(datetime.now(UTC)),
        )
    except BackupError as error:
        print(json.dumps({"reason": error.reason, "message": error.message}))
    else:
        print(json.dumps({"reason": None}))
    """
)


def test_a_full_disk_leaves_no_partial_archive(
    postgres_server: PostgresServer, source: str, tmp_path: Path
) -> None:
    with psycopg.connect(postgres_server.dsn(source), autocommit=True) as conn:
        conn.execute("CREATE TABLE blobs (id int, data bytea)")
        with conn.cursor().copy("COPY blobs FROM STDIN") as copy:
            for i in range(6):
                copy.write_row((i, os.urandom(1 << 20)))  # incompressible: 6 MB of dump
    storage_root = tmp_path / "store"
    storage_root.mkdir()
    (storage_root / "earlier.archive").write_bytes(b"an earlier backup")
    child = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(storage_root)],
        input=postgres_server.dsn(source),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    outcome = json.loads(child.stdout)
    assert outcome["reason"] == "StorageFull", outcome
    assert "is full (File too large) while writing" in outcome["message"]
    assert postgres_server.password not in outcome["message"]
    # Nothing of the failed backup: no archive, no manifest, no temporary file.
    assert everything_in(storage_root) == ["earlier.archive"]
    # pg_dump was stopped, not left running against the server.
    busy = postgres_server.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('pg_dump', "
        "'cleo-operator-backup')"
    )
    assert busy == [(0,)]


def test_memory_stays_flat_on_a_database_larger_than_it(
    postgres_server: PostgresServer, source: str, keyring: Keyring, tmp_path: Path
) -> None:
    size_mb = 48
    with psycopg.connect(postgres_server.dsn(source), autocommit=True) as conn:
        conn.execute("CREATE TABLE blobs (id int, data bytea)")
        with conn.cursor().copy("COPY blobs FROM STDIN") as copy:
            for i in range(size_mb * 4):
                copy.write_row((i, os.urandom(256 << 10)))
    tracemalloc.start()
    try:
        result = run_backup(
            source=ConnectionInfo.from_dsn(postgres_server.dsn(source)),
            tenant="acme",
            storage=LocalStorage(tmp_path),
            keyring=keyring,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.archive_size > size_mb << 20  # random bytes do not compress
    # A runner that held the dump (or the archive) in memory would peak above 48 MiB;
    # streaming needs a few 1 MiB chunks.
    assert peak < 12 << 20, f"peak {peak / (1 << 20):.1f} MiB of Python allocations"

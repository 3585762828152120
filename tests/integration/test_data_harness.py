"""The PostgreSQL test harness itself: what every database test relies on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.harness.postgres import (
    PostgresServer,
    _alive,
    find_postgres_bindir,
    make_standby,
)

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]

# A child test process that starts a server, reports it, then waits to be killed
# (or, with "exit", leaves without calling stop()).
CHILD = """
import json, sys, time
from tests.harness.postgres import PostgresServer
server = PostgresServer().start()
print(json.dumps({"pid": server.postmaster_pid(), "folder": str(server.folder)}), flush=True)
if sys.argv[1] == "exit":
    sys.exit(0)
time.sleep(120)
"""


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def start_child(mode: str) -> tuple[subprocess.Popen[str], int, Path]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.wait(timeout=30)
        raise AssertionError(f"child failed: {child.stderr.read() if child.stderr else ''}")
    info = json.loads(line)
    return child, int(info["pid"]), Path(info["folder"])


def test_server_speaks_scram_only(postgres_server: PostgresServer) -> None:
    assert postgres_server.execute("SELECT current_user") == [(postgres_server.superuser,)]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_server.dsn(password="wrong"), connect_timeout=5)
    rules = postgres_server.execute(
        "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE error IS NULL"
    )
    assert rules == [("scram-sha-256",)]
    assert postgres_server.execute("SHOW password_encryption") == [("scram-sha-256",)]


def test_server_listens_on_loopback_and_its_own_socket(postgres_server: PostgresServer) -> None:
    assert postgres_server.execute("SHOW listen_addresses") == [("127.0.0.1",)]
    assert postgres_server.execute("SHOW port") == [(str(postgres_server.port),)]
    socket_dir = postgres_server.execute("SHOW unix_socket_directories")[0][0]
    assert Path(socket_dir) == postgres_server.folder
    assert (postgres_server.folder / f".s.PGSQL.{postgres_server.port}").is_socket()
    # The unix socket wants a password too.
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host=socket_dir, port=postgres_server.port, user="postgres", password="x")


def test_server_is_ready_for_standbys(postgres_server: PostgresServer) -> None:
    settings = dict(
        postgres_server.execute(
            "SELECT name, setting FROM pg_settings"
            " WHERE name IN ('wal_level', 'hot_standby', 'max_wal_senders', 'fsync')"
        )
    )
    assert settings["wal_level"] == "replica"
    assert settings["hot_standby"] == "on"
    assert int(settings["max_wal_senders"]) >= 2
    assert settings["fsync"] == "off"


def test_server_processes_do_not_run_as_root(postgres_server: PostgresServer) -> None:
    pid = postgres_server.postmaster_pid()
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    real_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert real_uid != 0
    if os.geteuid() != 0:
        assert real_uid == os.geteuid()


def test_standby_receives_rows_written_on_the_primary(
    postgres_replica_pair: tuple[PostgresServer, PostgresServer],
) -> None:
    primary, standby = postgres_replica_pair
    assert standby.execute("SELECT pg_is_in_recovery()") == [(True,)]
    assert standby.port != primary.port
    primary.execute("CREATE TABLE handoff (note text)")
    primary.execute("INSERT INTO handoff VALUES ('written on the primary')")

    def arrived() -> bool:
        try:
            return standby.execute("SELECT note FROM handoff") == [("written on the primary",)]
        except psycopg.errors.UndefinedTable:
            return False

    assert wait_until(arrived, timeout=20)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        standby.execute("INSERT INTO handoff VALUES ('on the standby')")
    streaming = primary.execute(
        "SELECT usename, state FROM pg_stat_replication WHERE application_name = 'cleo-standby'"
    )
    assert streaming == [("cleo_replicator", "streaming")]


def test_make_standby_needs_a_running_primary() -> None:
    server = PostgresServer()
    with pytest.raises(RuntimeError, match="running primary"):
        make_standby(server)


def test_stop_removes_process_and_folder() -> None:
    server = PostgresServer().start()
    pid, folder = server.postmaster_pid(), server.folder
    assert pid is not None
    assert _alive(pid)
    server.stop()
    assert not _alive(pid)
    assert not folder.exists()
    assert not server.running
    server.stop()  # twice is fine


def test_halt_keeps_data_and_port() -> None:
    with PostgresServer() as server:
        server.execute("CREATE TABLE kept (x int)")
        server.execute("INSERT INTO kept VALUES (1)")
        port = server.port
        server.halt()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.dsn(), connect_timeout=2)
        server.start()
        assert server.port == port
        assert server.execute("SELECT x FROM kept") == [(1,)]


def test_killed_test_process_leaves_no_server_behind() -> None:
    child, pid, folder = start_child("sleep")
    try:
        assert _alive(pid)
        assert folder.exists()
    finally:
        child.send_signal(signal.SIGKILL)  # no atexit, no finally: only the watchdog acts
        child.wait(timeout=10)
    assert wait_until(lambda: not _alive(pid), timeout=20), "postmaster still running"
    assert wait_until(lambda: not folder.exists(), timeout=10), "folder still there"


def test_exiting_without_stop_leaves_no_server_behind() -> None:
    child, pid, folder = start_child("exit")
    assert child.wait(timeout=60) == 0
    # atexit already stopped it by the time the child is gone.
    assert not _alive(pid)
    assert wait_until(lambda: not folder.exists(), timeout=10)


def test_bindir_lookup_honours_pg_bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_postgres_bindir()
    # A folder that lacks the tools is passed over...
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    assert find_postgres_bindir() == real
    # ...one that has them all is taken.
    for tool in ("initdb", "pg_ctl", "postgres", "pg_basebackup"):
        (tmp_path / tool).symlink_to(real / tool)
    assert find_postgres_bindir() == tmp_path

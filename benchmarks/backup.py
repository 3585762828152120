"""Benchmark of the backup runner: its cost over plain pg_dump, and its memory as data grows.

Run from the repository root (it starts its own throwaway PostgreSQL server)::

    .venv/bin/python -m benchmarks.backup            # ~200 MB and ~50 MB databases
    .venv/bin/python -m benchmarks.backup --size-mb 400 --small-mb 100 --repeat 5

What it measures, in one run against the same server and data:

1. **Time**: `pg_dump -Fc` into a file, against `run_backup` (snapshot export, pg_dump
   through a pipe, SHA-256 of the dump, AES-256-GCM stream encryption, SHA-256 of the
   archive, per-table row counts and checksums in the same snapshot, atomic write, fsync,
   manifest). Runs alternate and the median of each side is compared; the target is a
   ratio of at most 1.15. The runner without checksums is timed too, to show their share.
2. **Memory**: the peak RSS of a process that does nothing but one `run_backup`, for the
   small and the large database. Streaming means it stays flat as the database grows.

This is not a test: it prints figures, and exits 0 whatever they are. The machine's other
load shows in the figures; run it on a quiet machine for numbers worth comparing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from cleo_operator.backup.connection import ConnectionInfo, libpq_environment
from cleo_operator.backup.runner import run_backup
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import Keyring
from tests.harness.postgres import PostgresServer

# Rows like CleoAI's: compressible text and JSON, and a share of incompressible bytes
# (embeddings, attachments), so that pg_dump's compression does realistic work.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id bigserial PRIMARY KEY,
    tenant_user int NOT NULL,
    content text NOT NULL,
    payload jsonb NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS attachments (
    id bigserial PRIMARY KEY,
    memory bigint NOT NULL,
    data bytea NOT NULL
);
"""
_BATCH = """
INSERT INTO memories (tenant_user, content, payload)
SELECT g % 1000,
       'memory ' || g || ': ' || repeat(md5(random()::text) || ' ', 8),
       jsonb_build_object('score', random(), 'tags', jsonb_build_array('a', 'b', g % 17),
                          'summary', md5(g::text))
  FROM generate_series(1, 20000) AS g;
INSERT INTO attachments (memory, data)
SELECT g,
       decode((SELECT string_agg(md5(random()::text || g::text || i::text), '')
                 FROM generate_series(1, 64) AS i), 'hex')
  FROM generate_series(1, 2000) AS g;
"""


def build_database(server: PostgresServer, dbname: str, *, size_mb: int) -> int:
    """Create `dbname` and grow it to about `size_mb` MB; returns its size in bytes."""
    server.execute(f'CREATE DATABASE "{dbname}"')
    with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
        conn.execute(_SCHEMA)
        while True:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            size = int(row[0]) if row else 0
            if size >= size_mb << 20:
                break
            conn.execute(_BATCH)
        conn.execute("VACUUM ANALYZE")
    return size


def plain_pg_dump(info: ConnectionInfo, out: Path) -> float:
    """Seconds for `pg_dump -Fc` into a file (and fsync, as the runner does)."""
    out.unlink(missing_ok=True)
    with libpq_environment(info) as env:
        started = time.perf_counter()
        subprocess.run(
            ["pg_dump", "--format=custom", "--no-password", f"--file={out}"],
            env=env,
            check=True,
        )
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return time.perf_counter() - started


def runner_backup(info: ConnectionInfo, folder: Path, *, checksums: bool) -> float:
    """Seconds for one `run_backup` into a fresh directory."""
    keyring = Keyring.generate(datetime.now(UTC))
    with tempfile.TemporaryDirectory(dir=folder) as target:
        started = time.perf_counter()
        run_backup(
            source=info,
            tenant="bench",
            storage=LocalStorage(target),
            keyring=keyring,
            checksums=checksums,
        )
        return time.perf_counter() - started


def peak_rss_of_one_backup(info: ConnectionInfo, folder: Path) -> dict[str, int]:
    """Peak RSS (KiB) of a fresh process that runs one backup, and the archive's size."""
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.backup", "--child", str(folder)],
        input=json.dumps(
            {
                "host": info.host,
                "port": info.port,
                "dbname": info.dbname,
                "user": info.user,
                "password": info.password,
            }
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, int] = json.loads(child.stdout)
    return figures


def child_main(folder: str) -> None:
    """`--child`: one backup, then print this process's peak RSS and the archive's size."""
    params = json.loads(sys.stdin.read())
    info = ConnectionInfo(**params)
    with tempfile.TemporaryDirectory(dir=folder) as target:
        result = run_backup(
            source=info,
            tenant="bench",
            storage=LocalStorage(target),
            keyring=Keyring.generate(datetime.now(UTC)),
        )
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"maxrss_kib": maxrss_kib, "archive_size": result.archive_size}))


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    times = [measure() for _ in range(runs)]
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="the large database")
    parser.add_argument("--small-mb", type=int, default=50, help="the small database")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each kind")
    parser.add_argument("--child", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return

    with PostgresServer() as server, tempfile.TemporaryDirectory(prefix="cleo-bench-") as tmp:
        folder = Path(tmp)
        print(f"building databases of ~{args.small_mb} MB and ~{args.size_mb} MB ...")
        small_size = build_database(server, "small", size_mb=args.small_mb)
        large_size = build_database(server, "large", size_mb=args.size_mb)
        small = ConnectionInfo.from_dsn(server.dsn("small"))
        large = ConnectionInfo.from_dsn(server.dsn("large"))

        # Warm the caches once, then alternate the two kinds of run.
        plain_pg_dump(large, folder / "warm.dump")
        plain_times: list[float] = []
        runner_times: list[float] = []
        for _ in range(args.repeat):
            plain_times.append(plain_pg_dump(large, folder / "plain.dump"))
            runner_times.append(runner_backup(large, folder, checksums=True))
        dump_size = (folder / "plain.dump").stat().st_size
        no_checksums, _ = median_of(
            args.repeat, lambda: runner_backup(large, folder, checksums=False)
        )
        plain = statistics.median(plain_times)
        runner = statistics.median(runner_times)

        rss_small = peak_rss_of_one_backup(small, folder)
        rss_large = peak_rss_of_one_backup(large, folder)

    mib = 1 << 20
    print()
    print(f"database: {large_size / mib:.0f} MiB on disk, pg_dump -Fc: {dump_size / mib:.0f} MiB")
    print(f"plain pg_dump -Fc to a file:      median {plain:6.2f} s  runs {_fmt(plain_times)}")
    print(f"run_backup (encrypted, checksums): median {runner:6.2f} s  runs {_fmt(runner_times)}")
    print(f"run_backup without checksums:      median {no_checksums:6.2f} s")
    ratio = runner / plain
    verdict = "within" if ratio <= 1.15 else "ABOVE"
    print(f"ratio runner / plain: {ratio:.3f} ({verdict} the 1.15 target)")
    print()
    print("peak RSS of a process running one backup:")
    for label, size, figures in (
        ("small", small_size, rss_small),
        ("large", large_size, rss_large),
    ):
        print(
            f"  {label}: database {size / mib:6.0f} MiB, archive "
            f"{figures['archive_size'] / mib:6.0f} MiB, "
            f"peak RSS {figures['maxrss_kib'] / 1024:6.1f} MiB"
        )
    growth = (rss_large["maxrss_kib"] - rss_small["maxrss_kib"]) / 1024
    print(
        f"  RSS growth for {(large_size - small_size) / mib:.0f} MiB more data: {growth:+.1f} MiB"
    )


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    main()

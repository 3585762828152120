"""Pooling: 200 clients against a tenant's database, direct and through the operator's pooler.

Prints, for each way in (direct to PostgreSQL, and through a real ``pgbouncer`` running the
configuration the operator renders for ``spec.database.pooler``):
- the peak of server connections of the tenant's role (``pg_stat_activity``, sampled
  every 50 ms);
- transactions per second over the run (each: a read by key and an update of the
  client's own row, in one transaction), and how many clients failed.

The clients keep their connections open for the whole run (as application pods with a
client-side pool do) and run as coroutines of one process, so the client side costs the
same in both runs. The server allows 250 connections so that the direct run can connect
at all; with PostgreSQL's default of 100, 200 direct clients are refused outright.

Not a test: it prints figures. Usage:

    .venv/bin/python -m benchmarks.pooling [--clients 200] [--seconds 10] [--pool-size 10]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import random
import secrets
import threading
import time
from dataclasses import dataclass

import psycopg

from cleo_operator.api.pooler import PoolerSpec
from cleo_operator.crypto.pooler_tls import issue_pooler_tls
from cleo_operator.data.pool import SitePools
from cleo_operator.data.sites import AdminCredentials
from cleo_operator.data.tenant_db import (
    ensure_tenant_database,
    tenant_database_name,
    tenant_role_name,
)
from cleo_operator.reconcile.pooler import pooler_target
from cleo_operator.render.pooler import pooler_config_values
from tests.harness.pgbouncer import running_pgbouncer
from tests.harness.postgres import PostgresServer

TENANT = "bench"
ROWS = 10_000


@dataclass
class Run:
    way: str
    clients: int
    transactions: int
    failed: int
    seconds: float
    peak_server_connections: int

    @property
    def tps(self) -> float:
        return self.transactions / self.seconds


def sample_peak(server: PostgresServer, stop: threading.Event, peak: list[int]) -> None:
    role = tenant_role_name(TENANT)
    with server.connect() as conn:
        while not stop.is_set():
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,)
            ).fetchone()
            peak[0] = max(peak[0], int(row[0]) if row else 0)
            time.sleep(0.05)


def run(way: str, dsn: str, clients: int, seconds: float, server: PostgresServer) -> Run:
    """`clients` coroutines, each on its own connection to `dsn`, for `seconds`."""
    counts = {"transactions": 0, "connected": 0, "failed": 0}
    start = asyncio.Event()
    deadline = [float("inf")]  # set once every client is in

    async def client(index: int) -> bool:
        try:
            # No server-side prepared statements: PgBouncer before 1.21 cannot keep them
            # across transactions (docs/databases.md); the direct run does the same.
            conn = await psycopg.AsyncConnection.connect(
                dsn, connect_timeout=60, prepare_threshold=None
            )
        except psycopg.Error:
            counts["failed"] += 1
            return False
        counts["connected"] += 1
        async with conn:
            await start.wait()
            while time.monotonic() < deadline[0]:
                async with conn.transaction():
                    key = random.randint(1, ROWS)  # noqa: S311 - load, not security
                    await conn.execute("SELECT balance FROM accounts WHERE id = %s", (key,))
                    await conn.execute(
                        "UPDATE accounts SET balance = balance + 1 WHERE id = %s", (index + 1,)
                    )
                counts["transactions"] += 1
        return True

    async def all_clients() -> float:
        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        # Every client connects first (as pods do when they start), then the clock runs.
        for _ in range(1200):
            if counts["connected"] + counts["failed"] >= clients:
                break
            await asyncio.sleep(0.05)
        began = time.monotonic()
        deadline[0] = began + seconds
        start.set()
        await asyncio.gather(*tasks)
        return time.monotonic() - began

    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=sample_peak, args=(server, stop, peak), daemon=True)
    sampler.start()
    try:
        elapsed = asyncio.run(all_clients())
    finally:
        stop.set()
        sampler.join()
    return Run(way, clients, counts["transactions"], counts["failed"], elapsed, peak[0])


def report(result: Run) -> None:
    print(
        f"{result.way:<28} clients {result.clients:>4} (failed {result.failed:>3})  "
        f"peak server connections {result.peak_server_connections:>4}  "
        f"{result.tps:>9.0f} tx/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--mode", choices=("transaction", "session"), default="transaction")
    args = parser.parse_args(argv)

    password = secrets.token_urlsafe(32)
    role, database = tenant_role_name(TENANT), tenant_database_name(TENANT)
    settings = {"max_connections": str(args.clients + 50)}
    with PostgresServer(settings=settings) as server:
        site = server.site()
        credentials = AdminCredentials(user=server.superuser, password=server.password)
        with SitePools({"main": site}, credentials=lambda _site: credentials) as pools:
            ensure_tenant_database(
                pools, "main", tenant=TENANT, password=password, connection_limit=-1
            )
        with psycopg.connect(server.dsn(database, user=role, password=password)) as conn:
            conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
            conn.execute("INSERT INTO accounts SELECT g, 0 FROM generate_series(1, %s) g", (ROWS,))
        print(
            f"{args.clients} clients, {args.seconds:.0f} s each, one process of coroutines; "
            f"{os.cpu_count()} CPUs; PostgreSQL max_connections {settings['max_connections']}"
        )
        direct = server.dsn(database, user=role, password=password)
        report(run("direct", direct, args.clients, args.seconds, server))
        pooler = PoolerSpec(
            enabled=True,
            mode=args.mode,
            pool_size=args.pool_size,
            max_client_connections=args.clients + 50,
        )
        # As the operator renders it: the role's password for the server, a client
        # password of the pooler's own for the clients, and client TLS with its own pair.
        client_password = secrets.token_urlsafe(32)
        tls = issue_pooler_tls(
            service="cleo-pooler",
            namespace="bench",
            cluster_domain="cluster.local",
            now=datetime.datetime.now(datetime.UTC),
        )
        files = pooler_config_values(
            target=pooler_target(site, tenant=TENANT),
            pooler=pooler,
            password=password,
            client_password=client_password,
            tls=tls,
            namespace="cleo-x",
        )
        with running_pgbouncer(files) as bouncer:
            dsn = (
                f"host={bouncer.host} port={bouncer.port} dbname={database} user={role} "
                f"password={client_password} sslmode=require"
            )
            way = f"pooler ({args.mode}, poolSize {args.pool_size})"
            report(run(way, dsn, args.clients, args.seconds, server))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

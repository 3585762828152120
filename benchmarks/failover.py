"""Failover RTO: a Switchover and a Failover of a tenant, measured, against real servers.

Each round starts a new PostgreSQL primary and streaming standby, a tenant on them (its
database, role and credentials Secret made by the real database part, a CleoAI Deployment
on the local control plane), and an application that writes one row per transaction
through the credentials Secret (re-reading it after an error, as a restarted pod would).
Then:

- Switchover: both servers up; the application writes throughout.
- Failover: the primary is stopped (``pg_ctl stop``), then the CleoFailover is created.

Prints per round and type: the measured RTO (``status.measuredRTOSeconds``: start of the
procedure to the end of its last step, pods available included), each step's duration,
the application's longest gap between two committed rows, and whether every committed row
is on the new primary. Target: RTO under 10 seconds here. Not a test: it prints figures.

    .venv/bin/python -m benchmarks.failover [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cleo_operator.failover.steps import seconds_between
from cleo_operator.kube.client import KubeClient
from e2e.cluster import LocalCluster, build_toolchain
from tests.harness.postgres import PostgresServer, make_standby
from tests.integration.failover_support import Setting, run_until, tenant_setting

REPO = Path(__file__).resolve().parent.parent
TARGET_RTO_SECONDS = 10.0


class Application:
    """Writes one row per transaction through the tenant's Secret; follows a repoint."""

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.committed = 0
        self.commits: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Application:
        with self.setting.connect_as_tenant() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS memories (id bigserial, body text)")
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with self.setting.connect_as_tenant() as conn:
                    while not self.stop.is_set():
                        conn.execute("INSERT INTO memories (body) VALUES ('benchmark')")
                        self.committed += 1
                        self.commits.append(time.monotonic())
            except (psycopg.Error, AssertionError):
                time.sleep(0.05)  # cut off: reconnect with what the Secret says now

    def longest_gap(self) -> float:
        gaps = [b - a for a, b in zip(self.commits, self.commits[1:], strict=False)]
        return max(gaps, default=float("nan"))


def kube_client(kubeconfig: Path) -> KubeClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return KubeClient(k8s.ApiClient(configuration))


def one_round(kube: KubeClient, kind: str) -> dict[str, Any]:
    with PostgresServer() as primary:
        standby = make_standby(primary)
        try:
            with tenant_setting(kube, (primary, standby)) as setting, setting.pools() as pools:
                reconciler = setting.reconciler(pools)
                with Application(setting) as app:
                    time.sleep(1.0)
                    if kind == "Failover":
                        setting.primary.halt()
                    name = setting.create_failover(kind)
                    started = time.monotonic()
                    obj = run_until(reconciler, setting, name)
                    wall = time.monotonic() - started
                    time.sleep(1.0)  # the application writes on the new primary again
                status = obj["status"]
                durations = {
                    s["name"]: seconds_between(s.get("startTime"), s.get("endTime"))
                    for s in status.get("steps") or []
                }
                on_new = setting.count_rows(setting.standby)
                return {
                    "kind": kind,
                    "phase": status.get("phase"),
                    "rto": status.get("measuredRTOSeconds"),
                    "wall": wall,
                    "steps": durations,
                    "gap": app.longest_gap(),
                    "committed": app.committed,
                    "on_new_primary": on_new,
                    "rpo_bytes": status.get("estimatedRPOBytes"),
                }
        finally:
            standby.stop()


def report(result: dict[str, Any]) -> None:
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in result["steps"].items() if v is not None)
    # A failover of a stopped primary cannot see rows committed and never sent; a
    # switchover must have every one of them.
    lost = result["committed"] - result["on_new_primary"]
    print(
        f"{result['kind']:<10} {result['phase']:<9} RTO {result['rto']:.2f}s "
        f"(wall {result['wall']:.2f}s); application gap {result['gap']:.2f}s; "
        f"rows committed {result['committed']}, on the new primary {result['on_new_primary']} "
        f"(lost {lost}); estimated RPO {result['rpo_bytes']} bytes"
    )
    print(f"{'':<10} steps: {steps}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per type (default 3)")
    args = parser.parse_args(argv)
    with LocalCluster(bin_dir=build_toolchain()) as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for plural in ("cleotenants", "cleobackups", "cleofailovers"):
            cluster.kubectl(
                "wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.cleoai.io"
            )
        kube = kube_client(cluster.kubeconfig)
        results: dict[str, list[dict[str, Any]]] = {"Switchover": [], "Failover": []}
        for _ in range(args.rounds):
            for kind, rounds in results.items():
                result = one_round(kube, kind)
                report(result)
                rounds.append(result)
    print()
    worst = 0.0
    for kind, rounds in results.items():
        rtos = [r["rto"] for r in rounds if r["rto"] is not None]
        worst = max([worst, *rtos])
        print(
            f"{kind:<10} RTO median {statistics.median(rtos):.2f}s, max {max(rtos):.2f}s "
            f"over {len(rtos)} round(s) (target < {TARGET_RTO_SECONDS:.0f}s)"
        )
    return 0 if worst < TARGET_RTO_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())

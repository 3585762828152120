"""Tenant storm: N CleoTenants at once against the local control plane.

Prints, in one run:
- seconds until every tenant is Ready;
- API write requests per tenant (from the API server's audit log, the operator's identity
  only) against the number of child objects per tenant;
- the operator's peak RSS;
- the operator's log while the settled tenants resync (``--idle-seconds``, at least one
  ``--resync`` period, read from when every tenant is Ready): JSON lines per minute, and
  lines per tenant per resync (target: at most one; none when nothing happened), with the
  tenant reconciles the operator counted meanwhile (its /metrics: proof that the resyncs
  ran) and the most frequent messages when there are any;
- the baseline: the same objects written by a plain client (server-side apply, the same
  number of threads as the operator's workers), waited for the same way (Deployments
  available), and the ratio of the two times.

Targets: ratio <= 1.5, writes per tenant <= children + 2, RSS <= 200 MiB at 1,000 tenants.
Not a test: it prints figures. Usage (1,000 tenants unless told; ``--tenants 20`` is a quick
run, ``--no-baseline`` leaves out the plain client's run):

    .venv/bin/python -m benchmarks.tenant_storm [--tenants 1000] [--workers 8] \
        [--resync 60] [--idle-seconds 120] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.kube.apply import with_hash
from cleo_operator.kube.client import KubeClient
from cleo_operator.render.tenant import render_tenant
from cleo_operator.render.workload import config_checksum
from e2e.cluster import OPERATOR_USER, LocalCluster, build_toolchain, die_with_parent, free_port

REPO = Path(__file__).resolve().parent.parent

SPEC: dict[str, Any] = {
    "admins": [{"kind": "Group", "name": "admins"}],
    "quota": {"cpu": "4", "memory": "8Gi", "pods": 20},
    "limits": {"defaultRequestCpu": "50m", "defaultRequestMemory": "64Mi"},
    "network": {"databaseEgress": [{"cidr": "10.20.0.0/16", "ports": [5432]}]},
    "workload": {
        "image": "registry.example.com/cleoai:1.4.2",
        "replicas": 1,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "config": {"CLEO_MODE": "bench"},
    },
    "autoscaling": {"enabled": False},
}


def kube_client(kubeconfig: Path, pool: int) -> KubeClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = pool
    return KubeClient(k8s.ApiClient(configuration))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_all_ready(cluster: LocalCluster, names: set[str], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        out = cluster.kubectl("get", "cleotenants", "-o", "json").stdout
        ready = set()
        for item in json.loads(out)["items"]:
            for cond in (item.get("status") or {}).get("conditions") or []:
                if cond["type"] == "Ready" and cond["status"] == "True":
                    ready.add(item["metadata"]["name"])
        if names <= ready:
            return time.monotonic() - start
        time.sleep(1)
    raise TimeoutError(f"{len(names - ready)} tenants not Ready after {timeout:.0f}s")


def wait_deployments_available(cluster: LocalCluster, namespaces: set[str], timeout: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        out = cluster.kubectl("get", "deployments", "-A", "-o", "json").stdout
        available = {
            d["metadata"]["namespace"]
            for d in json.loads(out)["items"]
            if any(
                c["type"] == "Available" and c["status"] == "True"
                for c in (d.get("status") or {}).get("conditions") or []
            )
        }
        if namespaces <= available:
            return
        time.sleep(1)
    raise TimeoutError("baseline Deployments did not become available")


def tenant_reconciles(port: int) -> float:
    """``cleo_operator_reconciles_total`` of CleoTenants, every result, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cleo_operator_reconciles_total{") and 'kind="CleoTenant"' in line
    )


def run_operator(
    cluster: LocalCluster,
    names: list[str],
    workers: int,
    log: Path,
    *,
    resync: float = 60.0,
    idle_seconds: float = 0.0,
) -> dict[str, Any]:
    metrics_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "cleo_operator.cli", "--log-format", "json", "run",
            "--workers", str(workers), "--metrics-port", str(metrics_port), "--liveness", "",
            "--operator-namespace", "cleo-system", "--resync", str(resync),
        ],
        cwd=REPO,
        env=cluster.operator_env(),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - single-threaded benchmark driver
    )  # fmt: skip
    try:
        time.sleep(2)
        offset = cluster.audit_offset()
        docs = [
            {
                "apiVersion": "cleoai.io/v1alpha1",
                "kind": "CleoTenant",
                "metadata": {"name": n},
                "spec": SPEC,
            }
            for n in names
        ]
        start = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        try:
            seconds = wait_all_ready(cluster, set(names), timeout=60 + 2 * len(names))
        except TimeoutError:
            sys.stderr.write(log.read_text(errors="replace")[-3000:])  # why, from the operator
            raise
        seconds += 0  # measured from the apply, which is part of what a user waits for
        elapsed = time.monotonic() - start
        time.sleep(3)  # writes that land just after Ready (late status) still count
        # Not the leader election's renews of its Lease: they are per second, not per tenant.
        writes = [
            e
            for e in cluster.audit_events(user=OPERATOR_USER, offset=offset)
            if e["objectRef"].get("resource") != "leases"
        ]
        settled = log.stat().st_size
        reconciles_before = tenant_reconciles(metrics_port)
        time.sleep(idle_seconds)  # settled tenants resync: what does the log say meanwhile?
        idle_reconciles = tenant_reconciles(metrics_port) - reconciles_before
        with log.open("rb") as f:
            f.seek(settled)
            idle_text = f.read().splitlines()
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    tenant = json.loads(cluster.kubectl("get", "cleotenant", names[0], "-o", "json").stdout)
    # The tenant's objects: the rendered children, and its keyring in two homes (the
    # tenant's namespace and, KEK-wrapped, the operator's).
    homes = (("cleo-keyring", f"cleo-{names[0]}"), (f"cleo-keyring-{names[0]}", "cleo-system"))
    keyring = sum(
        cluster.kubectl("get", "secret", name, "-n", ns, check=False).returncode == 0
        for name, ns in homes
    )
    by_verb: dict[str, int] = {}
    for event in writes:
        verb = f"{event['verb']} {event['objectRef'].get('resource')}"
        by_verb[verb] = by_verb.get(verb, 0) + 1
    return {
        "seconds": elapsed,
        "writes": len(writes),
        "by_verb": by_verb,
        "children": len(tenant["status"]["children"]) + keyring,
        "rss_mib": rss,
        "idle_reconciles": idle_reconciles,
        **idle_log(idle_text, set(names)),
    }


def idle_log(lines: list[bytes], names: set[str]) -> dict[str, Any]:
    """What the operator logged while its tenants were idle: every line, the lines about a
    tenant, lines that are not JSON (none should be), and the most frequent messages."""
    entries: list[dict[str, Any]] = []
    not_json = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            not_json += 1
    messages: dict[str, int] = {}
    for entry in entries:
        message = str(entry.get("message", ""))[:100]
        messages[message] = messages.get(message, 0) + 1
    return {
        "idle_lines": len(entries) + not_json,
        "idle_not_json": not_json,
        "idle_tenant_lines": sum(
            1
            for e in entries
            if (e.get("object") or {}).get("name") in names or e.get("tenant") in names
        ),
        "idle_top": sorted(messages.items(), key=lambda kv: -kv[1])[:5],
    }


def run_baseline(cluster: LocalCluster, names: list[str], workers: int) -> float:
    """The same children, written by a plain client: no operator, no status, no checks."""
    kube = kube_client(cluster.kubeconfig, pool=workers + 4)
    spec = parse_tenant_spec(SPEC)
    checksum = config_checksum(secret_fingerprints={}, config=SPEC["workload"]["config"])

    def write_tenant(name: str) -> None:
        for obj in render_tenant(
            name=name, uid="00000000-0000-0000-0000-000000000000", spec=spec,
            config_checksum=checksum,
        ):  # fmt: skip
            obj["metadata"].pop("ownerReferences", None)  # no owner: nothing to own them
            kube.apply(with_hash(obj))

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write_tenant, names))
    wait_deployments_available(cluster, {f"cleo-{n}" for n in names}, timeout=60 + 2 * len(names))
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--resync", type=float, default=60.0, help="the operator's resync")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=120.0,
        help="how long to read the idle log (at least one resync; 0: not read)",
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time a plain client writing the same objects",
    )
    args = parser.parse_args(argv)
    n, workers = args.tenants, args.workers
    if 0 < args.idle_seconds < args.resync:
        parser.error("--idle-seconds: read the idle log over at least one --resync period")

    with LocalCluster(bin_dir=build_toolchain()) as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("apply", "-f", str(REPO / "deploy" / "rbac" / "tenant-roles.yaml"))
        # The ClusterRole the operator binds in each tenant namespace (it refuses to start
        # without it).
        cluster.kubectl(
            "apply",
            "--server-side",
            "-f",
            str(REPO / "deploy" / "rbac" / "operator-tenant-role.yaml"),
        )
        cluster.kubectl("create", "namespace", "cleo-system")
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/cleotenants.cleoai.io"
        )
        with tempfile.TemporaryDirectory() as tmp:
            operator = run_operator(
                cluster,
                [f"storm-{i:04d}" for i in range(n)],
                workers,
                Path(tmp) / "op.log",
                resync=args.resync,
                idle_seconds=args.idle_seconds,
            )
        baseline = (
            run_baseline(cluster, [f"plain-{i:04d}" for i in range(n)], workers)
            if args.baseline
            else None
        )

    events = sum(c for verb, c in operator["by_verb"].items() if verb == "create events")
    per_tenant = (operator["writes"] - events) / n
    children = operator["children"]
    print(f"tenants:                      {n} (operator workers: {workers})")
    print(f"seconds until all Ready:      {operator['seconds']:.1f}")
    if baseline is not None:
        print(f"baseline (plain client):      {baseline:.1f} s")
        print(
            f"ratio operator/baseline:      {operator['seconds'] / baseline:.2f}  (target <= 1.5)"
        )
    print(
        f"API writes per tenant:        {per_tenant:.1f} for {children} children "
        f"(target <= {children + 2}), plus {events / n:.1f} Events"
    )
    for verb, count in sorted(operator["by_verb"].items(), key=lambda kv: -kv[1]):
        print(f"  {verb:<40} {count / n:6.2f} per tenant")
    print(f"operator peak RSS:            {operator['rss_mib']:.0f} MiB (target <= 200 at 1,000)")
    if args.idle_seconds > 0:
        minutes, resyncs = args.idle_seconds / 60, args.idle_seconds / args.resync
        print(
            f"idle log ({args.idle_seconds:.0f} s, resync {args.resync:.0f} s): "
            f"{operator['idle_lines'] / minutes:.1f} lines per minute, "
            f"{operator['idle_tenant_lines'] / (n * resyncs):.3f} per tenant per resync "
            "(target <= 1; 0 when nothing happened)"
        )
        print(
            f"  {operator['idle_lines']} lines in all, {operator['idle_tenant_lines']} about "
            f"a tenant, {operator['idle_not_json']} not JSON; "
            f"{operator['idle_reconciles']:.0f} tenant reconciles meanwhile "
            f"({operator['idle_reconciles'] / n:.2f} per tenant)"
        )
        for message, count in operator["idle_top"]:
            print(f"  {count:6d}  {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

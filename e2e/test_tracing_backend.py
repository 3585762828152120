"""A tenant's creation and its first backup, traced end to end into a real trace backend.

The operator process runs with tracing on (the chart's `tracing` values: `OTEL_*`
variables, `start_operator(tracing_endpoint=...)`) and sends its spans over OTLP/HTTP to
the toolchain's OpenTelemetry Collector (tests/harness/trace_collector.py), which writes
what it received to a file. The backup Job's command runs here as its pod would
(`run_job_pod`, with the Job's own env: the `OTEL_*` exporter settings and `TRACEPARENT`)
and sends its spans to the same collector. Read back from the collector, the trees must be:

- ``reconcile CleoTenant`` (the tenant's name, outcome ok, writes made) with its
  Kubernetes API requests as children (the tenant read, the Deployment applied);
- ``reconcile CleoBackup``, the reconcile that made the Job (the span the Job's
  ``TRACEPARENT`` names), with the Job's apply among its API children, and under it the
  runner's ``backup run`` (service ``cleo-backup``), whose steps (``backup``, the key, the
  snapshot, the dump, the manifest) are its descendants in the same trace; every span the
  runner sent is in that trace (its table statistics' thread too).

And it is all ONE trace: the backup is made while the tenant is being created (not Ready:
the fake node is cordoned for the test, so the tenant's pods wait to be scheduled, as pods
do that are still starting), so the backup's reconcile span is a child of the tenant's
creation, the first ``reconcile CleoTenant`` span, which is the trace's root
(`observability.creation_traces`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import FAKE_NODE, LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OPERATOR_NAMESPACE, OperatorProcess, start_operator
from tests.harness.specs import IMAGE, bound_backup_volume, tenant_manifest
from tests.harness.trace_collector import Span, TraceCollector, tree
from tests.integration.backup_cluster_support import run_job_pod

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

TENANT = "traced-backup"
NAMESPACE = f"cleo-{TENANT}"
BACKUP = "first"
RUNNER_STEPS = {
    "backup",
    "backup key",
    "backup snapshot",
    "backup dump, encrypt, upload",
    "backup manifest",
}


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def children(spans: Iterable[Span], parent: Span) -> list[Span]:
    return [
        s for s in spans if s.trace_id == parent.trace_id and s.parent_span_id == parent.span_id
    ]


def descendants(spans: list[Span], root: Span) -> list[Span]:
    found: list[Span] = []
    todo = [root]
    while todo:
        below = children(spans, todo.pop())
        found += below
        todo += below
    return found


def api_requests(spans: Iterable[Span]) -> set[tuple[str, str]]:
    return {
        (str(s.attributes["k8s.verb"]), str(s.attributes["k8s.kind"]))
        for s in spans
        if "k8s.verb" in s.attributes
    }


def storage(backup_volumes: Path) -> list[dict[str, Any]]:
    """A PersistentVolume made by hand and a claim bound to it (`bound_backup_volume`), and
    the one-off CleoBackup writing to it."""
    backup = {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoBackup",
        "metadata": {"name": BACKUP, "namespace": NAMESPACE},
        "spec": {
            "tenant": TENANT,
            "destination": {"type": "pvc", "pvc": {"claimName": "backups", "path": "cleo"}},
        },
    }
    volume = f"{TENANT}-backups"
    return [
        *bound_backup_volume(volume, NAMESPACE, str(backup_volumes / NAMESPACE / "backups")),
        backup,
    ]


def test_a_tenant_and_its_first_backup_are_trace_trees_in_the_collector(  # noqa: PLR0917
    cluster: LocalCluster,
    kube: Any,
    operator_process: OperatorProcess,
    operator_sites: dict[str, str],
    backup_volumes: Path,
    trace_collector: TraceCollector,
    tmp_path: Path,
) -> None:
    since = trace_collector.mark()
    operator_process.pause()
    traced: OperatorProcess | None = None
    # The tenant's pods stay unscheduled: it is still being created when its backup runs
    # (KWOK would make them ready within a second, before the backup's Job is made).
    cluster.kubectl("cordon", FAKE_NODE)
    try:
        traced = start_operator(
            cluster,
            tmp_path / "traced.log",
            extra_args=["--operator-namespace", OPERATOR_NAMESPACE],
            env=operator_sites,
            tracing_endpoint=trace_collector.endpoint,
        )
        tenant = tenant_manifest(
            TENANT,
            {
                "workload": {"image": IMAGE},
                "autoscaling": {"enabled": False},
                "database": {"enabled": True},
            },
        )
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(tenant))
        # What the backup's runner needs (the database's and the keyring's Secrets) is
        # there before the tenant's first status (withheld while it converges).
        wait_for(
            lambda: all(
                kubectl_json(cluster, "get", "secret", secret, "-n", NAMESPACE)
                for secret in ("cleo-database", "cleo-keyring")
            ),
            timeout=90,
            what="the tenant's database and keyring Secrets",
        )
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(storage(backup_volumes)))
        job = wait_for(
            lambda: kubectl_json(cluster, "get", "job", f"cleo-backup-{BACKUP}", "-n", NAMESPACE),
            timeout=60,
            what="the operator to make the backup Job",
        )
        run = run_job_pod(cluster, kube, job, workdir=tmp_path / "pod", volumes=backup_volumes)
        assert run.returncode == 0, run.stderr
        assert run.report is not None
        assert run.env["OTEL_SERVICE_NAME"] == "cleo-backup"
        parent = run.env["TRACEPARENT"]
        ready = conditions(kubectl_json(cluster, "get", "cleotenant", TENANT)).get("Ready", {})
        assert ready.get("status") != "True", ready  # still being created
        assert traced.stop() == 0, traced.log_text()[-3000:]  # SIGTERM flushes its spans
    finally:
        cluster.kubectl("uncordon", FAKE_NODE, check=False)
        if traced is not None:
            traced.stop()
        cluster.kubectl("delete", "cleotenant", TENANT, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", f"{TENANT}-backups", "--wait=false", check=False)
        operator_process.resume()

    _, trace_id, made_by, _ = parent.split("-")
    spans = trace_collector.wait_for(
        lambda spans: (
            RUNNER_STEPS | {"backup run"} <= {s.name for s in spans if s.trace_id == trace_id}
        ),
        since=since,
        what="the backup runner's spans",
    )

    # The tenant: a reconcile span with its API requests as children.
    tenant_reconciles = [
        s
        for s in spans
        if s.name == "reconcile CleoTenant" and s.attributes.get("cleo.name") == TENANT
    ]
    assert tenant_reconciles, sorted({s.name for s in spans})
    assert {s.service for s in tenant_reconciles} == {"cleo-operator"}
    assert {s.attributes["cleo.outcome"] for s in tenant_reconciles} <= {"ok", "retry"}
    assert any(s.attributes["cleo.writes"] > 0 for s in tenant_reconciles)
    requests = [
        c for s in tenant_reconciles for c in children(spans, s) if "k8s.verb" in c.attributes
    ]
    assert {("get", "CleoTenant"), ("apply", "Deployment")} <= api_requests(requests)
    assert all("http.response.status_code" in s.attributes for s in requests)

    # The backup: the reconcile that made the Job, the Job's apply under it, and the
    # runner's spans (another process, another service) under that reconcile.
    (reconcile,) = [s for s in spans if s.trace_id == trace_id and s.span_id == made_by]
    assert reconcile.name == "reconcile CleoBackup", tree(spans, trace_id=trace_id)
    assert reconcile.service == "cleo-operator"
    assert reconcile.attributes["cleo.name"] == BACKUP
    assert reconcile.attributes["cleo.namespace"] == NAMESPACE
    assert ("apply", "Job") in api_requests(children(spans, reconcile))
    runners = [s for s in children(spans, reconcile) if s.name == "backup run"]
    assert len(runners) == 1, tree(spans, trace_id=trace_id)
    runner = runners[0]
    assert runner.service == "cleo-backup"
    assert runner.attributes["cleo.backup"] == f"{NAMESPACE}/{BACKUP}"
    below = descendants(spans, runner)
    assert {s.name for s in below} >= RUNNER_STEPS, tree(spans, trace_id=trace_id)
    assert {s.service for s in below} == {"cleo-backup"}
    (backup,) = [s for s in below if s.name == "backup"]
    assert backup.attributes["cleo.backup_id"] == run.report["backup"]["backupId"]
    assert runner.start_ns >= reconcile.start_ns
    # Nothing the runner sent is a trace of its own (the statistics' thread included).
    assert {s.trace_id for s in spans if s.service == "cleo-backup"} == {trace_id}

    # One trace: the tenant's creation (its first reconcile, the root) holds the backup's
    # reconcile, and so the runner's subtree.
    creation = min(tenant_reconciles, key=lambda s: s.start_ns)
    assert creation.trace_id == trace_id, tree(spans, trace_id=trace_id)
    assert creation.parent_span_id == ""
    assert reconcile.parent_span_id == creation.span_id, tree(spans, trace_id=trace_id)

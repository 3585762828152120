"""`kubectl cleo backup now TENANT --wait` with the operator running: the one-off is made from
the tenant's scheduled CleoBackup, the operator makes its Job, the Job's command (run here as
the pod would run it) backs up, and the plugin follows the status to the archive's size.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import BACKUP, JOB
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import REPO, kubectl_json, wait_for
from tests.harness.operator_fixtures import OperatorProcess
from tests.harness.specs import IMAGE, backup_manifest, tenant_manifest
from tests.integration.backup_cluster_support import bound_claim, run_job_pod

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

TENANT = "plugnow"
NAMESPACE = f"cleo-{TENANT}"


def database_ready(cluster: LocalCluster) -> bool:
    tenant = kubectl_json(cluster, "get", "cleotenant", TENANT) or {}
    conditions = (tenant.get("status") or {}).get("conditions") or []
    return any(c["type"] == "DatabaseReady" and c["status"] == "True" for c in conditions)


def plugin(cluster: LocalCluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cleo_operator.cli.plugin", *args,
         "--kubeconfig", str(cluster.kubeconfig)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_backup_now_waits_for_the_one_off_the_operator_runs(
    cluster: LocalCluster,
    kube: KubeClient,
    operator_process: OperatorProcess,
    backup_volumes: Path,
    tmp_path: Path,
) -> None:
    del operator_process
    tenant = tenant_manifest(
        TENANT,
        {"workload": {"image": IMAGE}, "autoscaling": {"enabled": False},
         "database": {"enabled": True}},
    )  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(tenant))
    wait_for(lambda: database_ready(cluster), timeout=90, what="the tenant's database")
    nightly = backup_manifest(
        "nightly",
        NAMESPACE,
        {
            "tenant": TENANT,
            "schedule": "0 3 * * *",
            "destination": {"type": "pvc", "pvc": {"claimName": "backups", "path": "cleo"}},
        },
    )
    bound_claim(kube, NAMESPACE, "backups")  # no volume binder runs here
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(nightly))

    waiting = plugin(cluster, "backup", "now", TENANT, "--wait", "--timeout", "240s")
    try:

        def one_off_job() -> dict[str, Any] | None:
            jobs = kube.list(JOB, namespace=NAMESPACE)
            return next(
                (j for j in jobs if j["metadata"]["name"].startswith("cleo-run-nightly-now-")),
                None,
            )

        listed = wait_for(one_off_job, timeout=60, what="the operator to make the one-off's Job")
        job = kube.get(JOB, listed["metadata"]["name"], namespace=NAMESPACE)
        assert job is not None
        run = run_job_pod(cluster, kube, job, workdir=tmp_path / "pod", volumes=backup_volumes)
        assert run.returncode == 0, run.stderr
        out, err = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, err
    lines = out.splitlines()
    one_off = lines[0].split(":")[0].removeprefix(f"backup {NAMESPACE}/")
    assert one_off.startswith("nightly-now-")
    assert all(line.startswith(f"backup {NAMESPACE}/{one_off}: ") for line in lines)
    assert lines[-1].startswith(
        f"backup {NAMESPACE}/{one_off}: Succeeded, job {job['metadata']['name']}, archive "
    )
    created = kube.get(BACKUP, one_off, namespace=NAMESPACE)
    assert created is not None
    assert (created["spec"]["tenant"], created["spec"]["from"]) == (TENANT, "nightly")
    assert "destination" not in created["spec"]

    listing = plugin(cluster, "backups", TENANT)
    out, err = listing.communicate(timeout=60)
    assert listing.returncode == 0, err
    row = next(line for line in out.splitlines() if line.startswith(one_off))
    assert "one-off (from nightly)" in row
    assert "Succeeded" in row

"""The operator's log as an on-call engineer reads it: JSON lines with a zoned millisecond
time and the object of every reconcile line, no Kopf chatter at INFO, and silence while
settled tenants resync.

The real operator process runs on the local control plane with ``--log-format json`` and a
two-second resync; two tenants become Ready, then the log of a few idle resyncs is read: it
says nothing about them.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import LocalCluster
from e2e.test_operator_process import tenant_yaml, wait_ready
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OPERATOR_NAMESPACE, start_operator

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

RESYNC_SECONDS = 2.0
IDLE_RESYNCS = 3
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def parse(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        if line.strip():
            entries.append(json.loads(line))  # every line is one JSON object
    return entries


def about(entry: dict[str, Any], tenant: str) -> bool:
    obj = entry.get("object") or {}
    return entry.get("tenant") == tenant or tenant in (obj.get("name"), obj.get("namespace"))


def test_json_log_format_and_an_idle_resync_is_quiet(
    cluster: LocalCluster,
    crds_installed: None,
    operator_sites: dict[str, str],
    without_session_operator: None,
    tmp_path: Path,
) -> None:
    del crds_installed, without_session_operator
    tenants = ["logs-a", "logs-b"]
    proc = start_operator(
        cluster,
        tmp_path / "operator.log",
        extra_args=["--operator-namespace", OPERATOR_NAMESPACE, "--resync", str(RESYNC_SECONDS)],
        env=operator_sites,
        global_args=["--log-format", "json"],
    )
    try:
        for name in tenants:
            cluster.kubectl("apply", "-f", "-", input=tenant_yaml(name))
        for name in tenants:
            wait_ready(cluster, name)
        # Settled: the last writes of the convergence have come back as events.
        time.sleep(RESYNC_SECONDS)
        settled = len(proc.log_text())
        time.sleep(RESYNC_SECONDS * IDLE_RESYNCS)
        idle = parse(proc.log_text()[settled:])
    finally:
        for name in tenants:
            cluster.kubectl("delete", "cleotenant", name, "--wait=false", check=False)

        def gone() -> bool:
            return all(kubectl_json(cluster, "get", "cleotenant", n) is None for n in tenants)

        try:
            wait_for(gone, timeout=60, what="the log test's tenants to be deleted")
        finally:
            assert proc.stop() == 0, proc.log_text()[-3000:]

    entries = parse(proc.log_text())  # creation, idle resyncs, deletion and shutdown
    assert entries
    for entry in entries:
        assert TIME.match(entry["time"]), entry
        assert entry["level"] in {"debug", "info", "warning", "error", "critical"}, entry
        # Kopf's per-handler success lines are DEBUG now, and the default level is INFO.
        assert not re.match(r"Handler '[^']+' succeeded\.$", entry["message"]), entry
        # Every line about one of the tenants names its object (the reconcile loop's or Kopf's).
        if any(name in entry["message"] for name in tenants):
            assert entry.get("object"), entry
    for name in tenants:
        lines = [e for e in entries if about(e, name)]
        assert lines, f"nothing about {name} in the log"
        # The tenant's lines name the tenant (a CleoTenant's object is the tenant).
        assert any(e.get("tenant") == name for e in lines), lines
        # Nothing went wrong for them: created, resynced and deleted without a warning (Kopf's
        # "Daemon ... is cancelled" at deletion is DEBUG now).
        assert not [e for e in lines if e["level"] not in {"debug", "info"}], lines

    # A few resyncs of settled tenants in which nothing happened: not one line about them
    # (the target is at most one per tenant per resync, and none when nothing happened).
    for name in tenants:
        noisy = [e for e in idle if about(e, name)]
        assert noisy == [], noisy

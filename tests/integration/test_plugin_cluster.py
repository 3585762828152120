"""`kubectl cleo` against the real API server, as the cluster admin and as a tenant admin."""

from __future__ import annotations

import datetime
import io
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleo_operator.cli.plugin import main
from cleo_operator.cli.plugin.backup_now import _wait
from cleo_operator.cli.plugin.output import Display
from cleo_operator.cli.plugin.session import connect
from cleo_operator.crypto import unseal
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import BACKUP
from cleo_operator.reconcile.keys import OperatorKeys, ensure_operator_keys
from e2e.cluster import LocalCluster
from tests.harness.specs import backup_manifest
from tests.integration.plugin_support import (
    KEYS_NAMESPACE,
    TENANT_A,
    PluginWorld,
    make_world,
    namespace_of,
)

pytestmark = [pytest.mark.cluster]


@pytest.fixture(scope="module")
def world(cluster: LocalCluster, kube: KubeClient, crds_installed: None) -> PluginWorld:
    del crds_installed
    return make_world(cluster, kube)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def flatten(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("children", []) for n in flatten(child))]


def test_the_admin_sees_the_whole_tree_with_conditions(
    world: PluginWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "status", TENANT_A, "--kubeconfig", str(world.admin), "-o", "json")
    assert (code, err) == (0, "")
    tree = json.loads(out)["tenant"]
    assert (tree["kind"], tree["name"], tree["ready"]) == ("CleoTenant", TENANT_A, "False")
    rows = {(n["kind"], n["name"]): n for n in flatten(tree)}
    assert rows[("Condition", "Ready")]["reason"] == "AutoscalingNotReady"
    assert rows[("Condition", "NamespaceReady")]["ready"] == "True"
    assert rows[("Namespace", namespace_of(TENANT_A))]["ready"] == "True"
    for child in (("ConfigMap", "cleoai-config"), ("Service", "cleoai"), ("Role", "cleo-workload")):
        assert rows[child]["namespace"] == namespace_of(TENANT_A)
    backup = rows[("CleoBackup", "nightly")]
    assert backup["message"].startswith("phase Succeeded; newest backup 2026-12-03T03:00:00Z")
    failover = rows[("CleoFailover", "drill-1")]
    assert (failover["ready"], failover["reason"]) == ("True", "Succeeded")
    assert failover["message"] == "Drill started 2026-12-03T09:00:00Z, step verify Succeeded"
    assert ("ConfigMap", "hand-made") not in rows  # not the operator's: not the tenant's child
    assert not any("error" in n for n in flatten(tree))

    code, out, _ = run(capsys, "status", TENANT_A, "--kubeconfig", str(world.admin))
    assert code == 0
    assert out.splitlines()[0].split() == ["NAMESPACE", "NAME", "READY", "REASON", "AGE", "MESSAGE"]
    assert "└─Namespace/cleo-plug-a" in out
    assert "\x1b" not in out  # not a terminal: plain text


def test_backups_lists_the_tenants_backups(
    world: PluginWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "backups", TENANT_A, "--kubeconfig", str(world.admin), "-o", "yaml")
    assert code == 0
    [summary] = yaml.safe_load(out)["backups"]
    assert summary["name"] == "nightly"
    assert summary["lastBackup"] == {
        "time": "2026-12-03T03:00:00Z",
        "succeeded": True,
        "sizeBytes": 123456,
        "backupId": f"20261203T030000Z-{TENANT_A}",
    }
    code, out, _ = run(capsys, "backups", TENANT_A, "--kubeconfig", str(world.admin))
    assert code == 0
    assert out.splitlines()[1].split()[:6] == ["nightly", "0", "3", "*", "*", "*"]
    assert "120.6 KiB" in out


def test_a_missing_tenant_is_named_as_missing_to_the_admin(
    world: PluginWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "status", "ghost", "--kubeconfig", str(world.admin))
    assert (code, out) == (1, "")
    assert err == "error: CleoTenant ghost not found (kubectl get cleotenants lists them)\n"


def test_a_tenant_admin_sees_their_namespace_and_is_told_what_they_may_not_read(
    world: PluginWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "status", TENANT_A, "--kubeconfig", str(world.tenant_admin), "-o", "json"
    )
    assert (code, err) == (0, "")
    rows = {(n["kind"], n["name"]): n for n in flatten(json.loads(out)["tenant"])}
    assert rows[("CleoTenant", TENANT_A)]["error"] == (
        "you may not get cleotenants.cleoai.io at cluster scope"
    )
    assert rows[("Namespace", namespace_of(TENANT_A))]["error"] == (
        "you may not get namespaces at cluster scope"
    )
    assert rows[("Role", "*")]["error"] == (
        f"you may not list roles.rbac.authorization.k8s.io in namespace {namespace_of(TENANT_A)}"
    )
    assert ("ConfigMap", "cleoai-config") in rows
    assert ("CleoBackup", "nightly") in rows
    code, out, _ = run(capsys, "backups", TENANT_A, "--kubeconfig", str(world.tenant_admin))
    assert code == 0
    assert "nightly" in out


def test_seal_check_and_reseal_with_the_clusters_keys(
    cluster: LocalCluster,
    kube: KubeClient,
    world: PluginWorld,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster.kubectl("create", "namespace", KEYS_NAMESPACE, check=False)
    now = datetime.datetime.now(datetime.UTC)
    keys: OperatorKeys = ensure_operator_keys(
        kube, operator_namespace=KEYS_NAMESPACE, kek_dir=None, now=now
    )
    first = keys.sealing.load()
    tenant_file = tmp_path / "tenant.yaml"
    tenant_file.write_text(
        f"kind: CleoTenant\nmetadata:\n  name: {TENANT_A}\nspec:\n  paused: false\n"
    )
    common = ["--kubeconfig", str(world.admin), "--operator-namespace", KEYS_NAMESPACE]
    code, _, err = run(
        capsys,
        "seal",
        str(tenant_file),
        "--name",
        "db",
        "--from-literal",
        "PASSWORD=hunter2",
        *common,
    )
    assert (code, err) == (0, "")
    code, out, _ = run(capsys, "seal", str(tenant_file), "--check", *common)
    assert code == 0
    assert first.public_key.key_id in out

    rotated = keys.sealing.rotate(now=now)
    code, _, err = run(capsys, "seal", str(tenant_file), "--check", *common)
    assert code == 1
    assert "db/PASSWORD (" in err
    # The tenant admin may not read the operator's private keys: one line, nothing written.
    before = tenant_file.read_text()
    code, out, err = run(
        capsys, "seal", str(tenant_file), "--reseal", "--kubeconfig", str(world.tenant_admin),
        "--operator-namespace", KEYS_NAMESPACE,
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err.startswith(f"error: you may not get secrets in namespace {KEYS_NAMESPACE}: ")
    assert tenant_file.read_text() == before

    code, out, _ = run(capsys, "seal", str(tenant_file), "--reseal", *common, "-o", "json")
    assert code == 0
    [row] = json.loads(out)["resealed"]
    assert (row["fromKeyId"], row["toKeyId"], row["changed"]) == (
        first.public_key.key_id,
        rotated.public_key.key_id,
        True,
    )
    sealed = yaml.safe_load(tenant_file.read_text())["spec"]["secrets"][0]["data"]["PASSWORD"]
    assert unseal(rotated, sealed, tenant=TENANT_A, secret="db", key="PASSWORD") == b"hunter2"
    assert run(capsys, "seal", str(tenant_file), "--check", *common)[0] == 0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_waiting_follows_a_backups_status_to_its_end_on_a_terminal_and_in_plain_lines(
    kube: KubeClient, world: PluginWorld
) -> None:
    """What `backup now --wait` shows, fed by status writes made here (the operator's run
    is in e2e/test_plugin_operator.py)."""
    namespace = namespace_of(TENANT_A)
    created = kube.create(
        backup_manifest(
            f"watched-{secrets.token_hex(3)}",
            namespace,
            {"tenant": TENANT_A, "destination": {"type": "pvc", "pvc": {"claimName": "b"}}},
        )
    )
    name = created["metadata"]["name"]

    def run_the_backup() -> None:
        time.sleep(1.5)
        running = {"startTime": "2026-12-03T12:00:00Z", "job": f"cleo-backup-{name}"}
        kube.patch_merge(
            BACKUP, name, {"status": {"phase": "Running", "history": [running]}},
            namespace=namespace, subresource="status",
        )  # fmt: skip
        time.sleep(1.5)
        done = {**running, "succeeded": True, "sizeBytes": 1024 * 1024, "reason": "BackupSucceeded"}
        kube.patch_merge(
            BACKUP, name, {"status": {"phase": "Succeeded", "history": [done]}},
            namespace=namespace, subresource="status",
        )  # fmt: skip

    session = connect(kubeconfig=str(world.tenant_admin), context=None)
    writer = threading.Thread(target=run_the_backup)
    writer.start()
    terminal = Terminal()
    try:
        progress = _wait(Display(format="table", rich=True, stream=terminal), session, created, 60)
    finally:
        writer.join()
    assert (progress.done, progress.succeeded) == (True, True)
    assert progress.line() == f"Succeeded, job cleo-backup-{name}, archive 1.0 MiB"
    assert f"Succeeded, job cleo-backup-{name}, archive 1.0 MiB" in terminal.getvalue()

    # Not a terminal: one plain line per change; a backup that does not end times out.
    plain = io.StringIO()
    stuck = kube.create(
        backup_manifest(
            f"stuck-{secrets.token_hex(3)}",
            namespace,
            {"tenant": TENANT_A, "destination": {"type": "pvc", "pvc": {"claimName": "b"}}},
        )
    )
    progress = _wait(Display(format="table", rich=False, stream=plain), session, stuck, 2.5)
    assert not progress.done
    assert plain.getvalue() == f"backup {namespace}/{stuck['metadata']['name']}: Pending\n"


def test_a_tenant_admin_asks_for_a_backup_now_and_gets_a_one_off_of_the_scheduled_backup(
    kube: KubeClient, world: PluginWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "backup", "now", TENANT_A, "--kubeconfig", str(world.tenant_admin), "-o", "json"
    )
    assert (code, err) == (0, "")
    created = json.loads(out)["created"]
    assert created["name"].startswith("nightly-now-")
    assert (created["namespace"], created["tenant"], created["from"]) == (
        namespace_of(TENANT_A),
        TENANT_A,
        "nightly",
    )
    stored = kube.get(BACKUP, created["name"], namespace=namespace_of(TENANT_A))
    assert stored is not None
    assert stored["spec"]["from"] == "nightly"
    assert "destination" not in stored["spec"]  # the platform's choice, never the plugin's

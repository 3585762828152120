"""`kubectl cleo` against the real API server, as the cluster admin and as a tenant admin."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleo_operator.cli.plugin import main
from cleo_operator.crypto import unseal
from cleo_operator.kube.client import KubeClient
from cleo_operator.reconcile.keys import OperatorKeys, ensure_operator_keys
from e2e.cluster import LocalCluster
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

"""`kubectl_json` answers the tests' polls with one GET instead of a kubectl process: what it
returns must be what kubectl prints, or the tests that poll with it prove something else."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import _UNSUPPORTED, _get_directly, kubectl_json, wait_for

pytestmark = pytest.mark.cluster

NS = "harness-kubectl-json"


def by_kubectl(cluster: LocalCluster, *args: str) -> Any:
    result = cluster.kubectl(*args, "-o", "yaml", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def objects(cluster: LocalCluster, crds_installed: None) -> str:
    del crds_installed
    cluster.kubectl("create", "namespace", NS)
    cluster.kubectl("create", "configmap", "settings", "-n", NS, "--from-literal=a=b")
    cluster.kubectl("create", "secret", "generic", "login", "-n", NS, "--from-literal=pw=x")
    cluster.kubectl("create", "deployment", "web", "-n", NS, "--image=example.invalid/w:1")
    # Settled, so that the two answers compared are of the same versions of the objects.
    wait_for(
        lambda: (
            (by_kubectl(cluster, "get", "deployment", "web", "-n", NS).get("status") or {}).get(
                "availableReplicas"
            )
            == 1
        ),
        timeout=60,
        what="the Deployment to be available",
    )
    return NS


@pytest.mark.parametrize(
    "args",
    [
        ("get", "namespace", NS),
        ("get", "ns", NS),
        ("get", "configmap", "settings", "-n", NS),
        ("get", "secret", "login", "--namespace", NS),
        ("get", "deployment", "web", f"--namespace={NS}"),
        ("get", "deployments", "-n", NS),
        ("get", "replicasets", "-n", NS),
        ("get", "crd/cleotenants.cleoai.io"),
        ("get", "clusterrole", "admin"),
        ("get", "configmaps", "-n", NS),
        ("get", "cleobackups", "-n", NS),
        ("get", "hpa", "-n", NS),
        ("get", "configmap", "missing", "-n", NS),
        ("get", "cleotenant", "missing"),
    ],
    ids=lambda args: " ".join(args[1:3]),
)
def test_a_direct_get_returns_what_kubectl_prints(
    cluster: LocalCluster, objects: str, args: tuple[str, ...]
) -> None:
    del objects
    direct = _get_directly(cluster, args)
    assert direct is not _UNSUPPORTED, args
    assert json.dumps(direct, sort_keys=True) == json.dumps(
        by_kubectl(cluster, *args), sort_keys=True
    )


def test_anything_else_goes_to_kubectl(cluster: LocalCluster, objects: str) -> None:
    for args in (
        ("get", "events", "-n", objects),  # two API groups serve events: kubectl chooses
        ("get", "configmap", "settings", "-n", objects, "--show-managed-fields"),
        ("get", "configmaps", "-A"),
        ("describe", "namespace", objects),
    ):
        assert _get_directly(cluster, args) is _UNSUPPORTED, args
    shown = kubectl_json(
        cluster, "get", "configmap", "settings", "-n", objects, "--show-managed-fields"
    )
    assert shown["metadata"]["managedFields"], "kubectl answered, as it prints with the flag"

"""The local control plane is a real one: its controllers, garbage collector, RBAC and
fake node behave as a cluster's do. Everything else in the suite relies on this."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from e2e.cluster import LIMITED_USER, LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for

pytestmark = pytest.mark.cluster


def _apply(cluster: LocalCluster, obj: dict[str, object]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def _namespace(cluster: LocalCluster, name: str) -> str:
    cluster.kubectl("create", "namespace", name)
    return name


CRON_NAMESPACE = "cp-cron"


@pytest.fixture(scope="module", autouse=True)
def ticking_cron_job(cluster: LocalCluster) -> str:
    """The CronJob of the last test, made before the module's first test: its first run is
    up to a minute away (one-minute granularity), and the other tests run meanwhile instead
    of the wait. Its namespace."""
    ns = _namespace(cluster, CRON_NAMESPACE)
    _apply(
        cluster,
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "tick", "namespace": ns},
            "spec": {
                "schedule": "* * * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [{"name": "tick", "image": "example.invalid/t:1"}],
                            }
                        }
                    }
                },
            },
        },
    )
    return ns


def test_deployment_gets_replicaset_and_ready_pods(cluster: LocalCluster) -> None:
    ns = _namespace(cluster, "cp-deploy")
    _apply(
        cluster,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]},
                },
            },
        },
    )

    def ready() -> bool:
        dep = kubectl_json(cluster, "get", "deployment", "web", "-n", ns)
        return bool(dep and dep.get("status", {}).get("readyReplicas") == 2)

    wait_for(ready, timeout=90, what="2 ready replicas of the Deployment")
    rs = kubectl_json(cluster, "get", "replicasets", "-n", ns)
    assert len(rs["items"]) == 1
    assert rs["items"][0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    pods = kubectl_json(cluster, "get", "pods", "-n", ns)["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == "kwok-node-0"  # the scheduler placed it
        assert pod["status"]["phase"] == "Running"  # KWOK ran it


def test_deleted_namespace_disappears(cluster: LocalCluster) -> None:
    ns = _namespace(cluster, "cp-gone")
    cluster.kubectl("create", "configmap", "c", "-n", ns, "--from-literal=a=b")
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(
        lambda: kubectl_json(cluster, "get", "namespace", ns) is None,
        timeout=90,
        what="the namespace controller to remove the namespace",
    )


def test_owned_object_is_garbage_collected_with_its_owner(cluster: LocalCluster) -> None:
    ns = _namespace(cluster, "cp-gc")
    cluster.kubectl("create", "configmap", "owner", "-n", ns, "--from-literal=a=b")
    owner = kubectl_json(cluster, "get", "configmap", "owner", "-n", ns)
    _apply(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "owned",
                "namespace": ns,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
            "data": {"x": "y"},
        },
    )
    cluster.kubectl("delete", "configmap", "owner", "-n", ns)
    wait_for(
        lambda: kubectl_json(cluster, "get", "configmap", "owned", "-n", ns) is None,
        timeout=60,
        what="the garbage collector to delete the owned ConfigMap",
    )


def test_limited_token_is_forbidden(cluster: LocalCluster) -> None:
    limited = cluster.kubeconfig_for(LIMITED_USER, cluster.limited_token)
    denied = cluster.kubectl("get", "secrets", "-n", "kube-system", kubeconfig=limited, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert LIMITED_USER in denied.stderr
    can_i = cluster.kubectl(
        "auth", "can-i", "create", "deployments", "-n", "default", kubeconfig=limited, check=False
    )
    assert can_i.stdout.strip() == "no"
    # The admin token, on the same server, is allowed: the 403 is RBAC, not a broken server.
    assert cluster.kubectl("get", "secrets", "-n", "kube-system").returncode == 0


def test_stop_leaves_no_process_behind(cluster: LocalCluster) -> None:
    """A second, short-lived cluster stops completely (the session one is checked by CI)."""
    with LocalCluster(bin_dir=cluster.bin_dir) as second:
        pids = second.pids()
        # etcd, apiserver, controller-manager, scheduler, kwok, metrics-server
        assert len(pids) == 6
    time.sleep(0.5)
    alive = subprocess.run(
        ["ps", "-o", "pid=", "-p", ",".join(map(str, pids))],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert alive == []


# Last in the module: see `ticking_cron_job`.
def test_cronjob_every_minute_gets_a_job_that_completes(
    cluster: LocalCluster, ticking_cron_job: str
) -> None:
    ns = ticking_cron_job

    def completed_job() -> str | None:
        jobs = kubectl_json(cluster, "get", "jobs", "-n", ns)["items"]
        for job in jobs:
            owner = job["metadata"]["ownerReferences"][0]
            assert owner["kind"] == "CronJob"
            if job.get("status", {}).get("succeeded") == 1:
                return str(job["metadata"]["name"])
        return None

    # CronJobs have one-minute granularity: the first run is at most ~60 s after the fixture.
    wait_for(completed_job, timeout=150, interval=2, what="a completed Job of the CronJob")

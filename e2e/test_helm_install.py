"""The chart installed the way users install it, and the operator running as its identity.

`helm install` puts the chart into the local control plane; KWOK runs its pod (the image is
never pulled: KWOK only plays the kubelet). The operator process of these tests then runs
with a token of the chart's ServiceAccount, so everything it does in the tenant flow (the
example tenant becomes Ready with its namespace, and deleting it removes the namespace) is
done with exactly the permissions the chart grants: a missing verb shows up as a Forbidden
in its log, a tenant that never becomes Ready, or a finalizer that is never released.

The tenant is examples/tenant.yaml, as in test_operator_process.py, renamed so that the two
modules never share a tenant, and with deletionPolicy Delete so that deleting it also proves
the namespace deletion.

Why a control plane of its own (started from the session's binaries): the session's operator
(the `operator_process` fixture, cluster-wide and admin) may already run on the shared one,
and would race this module's operator for the tenant; whatever it wrote first, this one
would only find done, and a permission the chart lacks would go unnoticed.

Against a real cluster (CLEO_TEST_CLUSTER=current), set CLEO_TEST_IMAGE to an image the
cluster can pull (built by `make image`); the default repository exists nowhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import start_operator

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "cleo-operator"
RELEASE = "e2e-cleo-operator"  # contains the chart name, so objects are named like this
NAMESPACE = "cleo-helm-e2e"
TENANT = "helm-acme"


def helm_binary(cluster: LocalCluster) -> str:
    """The helm the toolchain built beside kubectl (or one on PATH, for a real cluster)."""
    built = cluster.bin_dir / "helm"
    if built.exists():
        return str(built)
    found = shutil.which("helm")
    if found is None:
        pytest.fail(f"no helm in {cluster.bin_dir} or on PATH: run e2e/toolchain/build.sh")
    return found


def helm(
    cluster: LocalCluster, home: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        **cluster.env(),
        # Helm's own state goes to the test's folder, never to the user's home.
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    result = subprocess.run(
        [helm_binary(cluster), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def own_cluster(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """A control plane for this module alone; the given one when it is a real cluster."""
    if not isinstance(cluster, LocalCluster):
        yield cluster
        return
    with LocalCluster(bin_dir=cluster.bin_dir) as private:
        yield private


@pytest.fixture(scope="module")
def release(own_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The chart installed (and waited for) into NAMESPACE; uninstalled at the end."""
    cluster = own_cluster
    home = tmp_path_factory.mktemp("helm")
    image = os.environ.get("CLEO_TEST_IMAGE", "")
    image_args = ["--set", f"image.repository={image}"] if image else []
    helm(
        cluster,
        home,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "3m",
        *image_args,
    )
    yield home
    helm(cluster, home, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def example_tenant() -> dict[str, Any]:
    """examples/tenant.yaml, renamed for this module and deleted with its namespace."""
    tenant: dict[str, Any] = yaml.safe_load((REPO / "examples" / "tenant.yaml").read_text())
    tenant["metadata"]["name"] = TENANT
    tenant["spec"]["deletionPolicy"] = "Delete"
    tenant["spec"].pop("namespace", None)
    return tenant


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def test_install_runs_the_operator_pod_as_the_chart_says(
    own_cluster: LocalCluster, release: Path
) -> None:
    cluster = own_cluster
    status = helm(cluster, release, "status", RELEASE, "--namespace", NAMESPACE, "-o", "json")
    assert yaml.safe_load(status.stdout)["info"]["status"] == "deployed"

    deployment = kubectl_json(cluster, "get", "deployment", RELEASE, "-n", NAMESPACE)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["status"].get("availableReplicas") == 1

    pods = kubectl_json(
        cluster,
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
    )["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == RELEASE
    container = pod["spec"]["containers"][0]
    assert container["args"][:3] == ["--log-level=INFO", "--log-format=json", "run"]
    assert f"--operator-namespace={NAMESPACE}" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    # The CRDs came with the chart (or were there already) and are served.
    for plural in ("cleotenants", "cleobackups", "cleofailovers"):
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.cleoai.io"
        )


def test_operator_with_the_charts_identity_runs_the_example_tenant(
    own_cluster: LocalCluster, release: Path, tmp_path: Path
) -> None:
    del release
    cluster = own_cluster
    token = cluster.kubectl(
        "create", "token", RELEASE, "-n", NAMESPACE, "--duration=1h"
    ).stdout.strip()
    identity = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
    kubeconfig = cluster.kubeconfig_for(identity, token)
    # The identity really is the chart's, with the chart's rights and no more.
    can_i = cluster.kubectl("auth", "whoami", "-o", "yaml", kubeconfig=kubeconfig)
    assert yaml.safe_load(can_i.stdout)["status"]["userInfo"]["username"] == identity
    forbidden = cluster.kubectl(
        "auth", "can-i", "create", "clusterrolebindings", kubeconfig=kubeconfig, check=False
    )
    assert forbidden.stdout.strip() == "no"

    operator = start_operator(
        cluster,
        tmp_path / "operator.log",
        extra_args=["--operator-namespace", NAMESPACE],
        env={"KUBECONFIG": str(kubeconfig)},
    )
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(example_tenant()))

        def ready() -> dict[str, Any] | None:
            tenant = kubectl_json(cluster, "get", "cleotenant", TENANT)
            cond = condition(tenant, "Ready")
            return tenant if cond and cond["status"] == "True" else None

        tenant = wait_for(ready, timeout=90, what=f"tenant {TENANT} Ready")
        namespace = tenant["status"]["namespace"]
        assert namespace == f"cleo-{TENANT}"
        ns = kubectl_json(cluster, "get", "namespace", namespace)
        assert ns["status"]["phase"] == "Active"
        assert ns["metadata"]["labels"]["cleoai.io/tenant"] == TENANT
        assert "cleoai.io/finalizer" in tenant["metadata"]["finalizers"]
        # Every child the reconciler made (a list that grows with it) was made by this
        # identity and is there.
        children = tenant["status"].get("children") or []
        # The example has admins and viewers: writing their Roles and RoleBindings is what
        # RBAC's escalation check guards, so the chart's onward grants are proven here.
        kinds = {child["kind"] for child in children}
        assert {"Namespace", "Role", "RoleBinding", "Deployment"} <= kinds, kinds
        for child in children:
            kind = f"{child['kind'].lower()}.{child['apiVersion'].split('/')[0]}"
            if "/" not in child["apiVersion"]:
                kind = child["kind"].lower()
            args = ["get", kind, child["name"]]
            if child.get("namespace"):
                args += ["-n", child["namespace"]]
            assert kubectl_json(cluster, *args) is not None, f"missing child {child}"

        # This process, with the chart's token, made those writes.
        written = {
            (sample.labels["resource"], sample.labels["verb"])
            for family in text_string_to_metric_families(operator.metrics())
            if family.name == "cleo_operator_api_writes"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.value > 0
        }
        assert ("namespaces", "apply") in written
        assert ("cleotenants", "patch-status") in written

        cluster.kubectl("delete", "cleotenant", TENANT, "--wait=false")
        wait_for(
            lambda: kubectl_json(cluster, "get", "cleotenant", TENANT) is None,
            timeout=120,
            what=f"tenant {TENANT} to be finalized and gone",
        )
        assert kubectl_json(cluster, "get", "namespace", namespace) is None
        assert operator.alive()
    finally:
        code = operator.stop()
        log = operator.log_text()
    assert code == 0, f"the operator did not stop cleanly ({code}):\n{log[-3000:]}"
    # A permission the chart forgot shows as a 403 somewhere in the operator's log.
    denied = [line for line in log.splitlines() if "Forbidden" in line or " 403" in line]
    assert not denied, "the chart's ServiceAccount was refused:\n" + "\n".join(denied[:20])
    assert token not in log

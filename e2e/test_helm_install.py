"""The chart installed the way users install it, and the operator running as its identity.

`helm install` puts the chart into the local control plane; KWOK runs its pod (the image is
never pulled: KWOK only plays the kubelet). The operator process of these tests then runs
with a token of the chart's ServiceAccount, so everything it does in the tenant flow (the
example tenant becomes Ready with its namespace, and deleting it removes the namespace) is
done with exactly the permissions the chart grants: a missing verb shows up as a Forbidden
in its log, a tenant that never becomes Ready, or a finalizer that is never released.

The tenant is examples/tenant.yaml, as in test_operator_process.py, renamed so that the two
modules never share a tenant, and with deletionPolicy Delete so that deleting it also proves
the namespace deletion. Its admins and viewers are bound to the chart's tenant ClusterRoles,
which the operator may bind (by name) but holds nothing of: the API server's escalation
check proves that here. A second tenant starts as an older version left it (namespaced
Roles and RoleBindings to them, listed in its status) and must end up without them.

Why a control plane of its own (started from the session's binaries): the session's operator
(the `operator_process` fixture, cluster-wide and admin) may already run on the shared one,
and would race this module's operator for the tenant; whatever it wrote first, this one
would only find done, and a permission the chart lacks would go unnoticed.

Against a real cluster (CLEO_TEST_CLUSTER=current), set CLEO_TEST_IMAGE to an image the
cluster can pull (built by `make image`); the default repository exists nowhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cleo_operator.render.rbac import tenant_role_rules
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OperatorProcess, start_operator
from tests.harness.specs import tenant_manifest

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "cleo-operator"
RELEASE = "e2e-cleo-operator"  # contains the chart name, so objects are named like this
NAMESPACE = "cleo-helm-e2e"
TENANT = "helm-acme"
LEGACY = "helm-legacy"
IDENTITY = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"


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


def chart_kubeconfig(cluster: LocalCluster) -> tuple[Path, str]:
    """A kubeconfig with a token of the chart's ServiceAccount, and the token."""
    token = cluster.kubectl(
        "create", "token", RELEASE, "-n", NAMESPACE, "--duration=1h"
    ).stdout.strip()
    return cluster.kubeconfig_for(IDENTITY, token), token


def start_chart_operator(cluster: LocalCluster, kubeconfig: Path, log: Path) -> OperatorProcess:
    return start_operator(
        cluster,
        log,
        extra_args=["--operator-namespace", NAMESPACE],
        # As the chart's Deployment names it.
        env={"KUBECONFIG": str(kubeconfig), "CLEO_OPERATOR_TENANT_ROLE": f"{RELEASE}-tenant"},
    )


def wait_ready(cluster: LocalCluster, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        tenant = kubectl_json(cluster, "get", "cleotenant", name)
        cond = condition(tenant, "Ready")
        return tenant if cond and cond["status"] == "True" else None

    tenant: dict[str, Any] = wait_for(ready, timeout=90, what=f"tenant {name} Ready")
    return tenant


def stop_and_check_log(operator: OperatorProcess, token: str) -> None:
    code = operator.stop()
    log = operator.log_text()
    assert code == 0, f"the operator did not stop cleanly ({code}):\n{log[-3000:]}"
    # A permission the chart forgot shows as a 403 somewhere in the operator's log.
    denied = [line for line in log.splitlines() if "Forbidden" in line or " 403" in line]
    assert not denied, "the chart's ServiceAccount was refused:\n" + "\n".join(denied[:20])
    assert token not in log


def can_i(cluster: LocalCluster, *args: str) -> bool:
    out = cluster.kubectl("auth", "can-i", *args, check=False).stdout.strip()
    assert out in {"yes", "no"}, out
    return out == "yes"


def test_install_runs_the_operator_pod_as_the_chart_says(
    own_cluster: LocalCluster, release: Path
) -> None:
    cluster = own_cluster
    status = helm(cluster, release, "status", RELEASE, "--namespace", NAMESPACE, "-o", "json")
    assert yaml.safe_load(status.stdout)["info"]["status"] == "deployed"

    deployment = kubectl_json(cluster, "get", "deployment", RELEASE, "-n", NAMESPACE)
    # Two replicas: one leads, the other stands by (docs/install.md, High availability).
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["status"].get("availableReplicas") == 2

    pods = kubectl_json(
        cluster,
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
    )["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running", "Running"]
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == RELEASE
    container = pod["spec"]["containers"][0]
    assert container["args"][:3] == ["--log-level=INFO", "--log-format=json", "run"]
    assert f"--operator-namespace={NAMESPACE}" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # The operator is told its own image, so every backup runner runs the installed one
    # (tests/integration/test_helm_backup.py follows it into the CronJob).
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CLEO_OPERATOR_IMAGE"] == container["image"]
    # The pod's name (from the downward API) starts the replica's identity in the Lease.
    assert "POD_NAME" in env
    assert env["CLEO_OPERATOR_NAMESPACE"] == NAMESPACE

    # The CRDs came with the chart (or were there already) and are served.
    for plural in ("cleotenants", "cleobackups", "cleofailovers"):
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.cleoai.io"
        )

    # So did the tenant ClusterRoles, with the rules of the code; the operator may bind
    # them (in tenant namespaces, through its own binding there: not before any tenant),
    # but holds nothing of what they grant. Its own tenant role it may bind anywhere the
    # operator-scope admission policy lets it (tests/security/test_blast_radius.py).
    for name, rules in tenant_role_rules().items():
        role = kubectl_json(cluster, "get", "clusterrole", name)
        assert role is not None, f"the chart did not install ClusterRole {name}"
        assert role["rules"] == rules, name
        assert role["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
        assert not can_i(cluster, "bind", f"clusterroles/{name}", f"--as={IDENTITY}")
    assert can_i(cluster, "bind", f"clusterroles/{RELEASE}-tenant", f"--as={IDENTITY}")
    assert not can_i(cluster, "bind", "clusterroles/cluster-admin", f"--as={IDENTITY}")
    for args in (
        ("create", "pods", "--subresource=exec"),
        ("get", "pods", "--subresource=log"),
        ("deletecollection", "secrets"),
        ("update", "deployments"),
    ):
        assert not can_i(cluster, *args, "--all-namespaces", f"--as={IDENTITY}"), args


def test_operator_with_the_charts_identity_runs_the_example_tenant(
    own_cluster: LocalCluster, release: Path, tmp_path: Path
) -> None:
    del release
    cluster = own_cluster
    kubeconfig, token = chart_kubeconfig(cluster)
    # The identity really is the chart's, with the chart's rights and no more.
    whoami = cluster.kubectl("auth", "whoami", "-o", "yaml", kubeconfig=kubeconfig)
    assert yaml.safe_load(whoami.stdout)["status"]["userInfo"]["username"] == IDENTITY
    forbidden = cluster.kubectl(
        "auth", "can-i", "create", "clusterrolebindings", kubeconfig=kubeconfig, check=False
    )
    assert forbidden.stdout.strip() == "no"

    operator = start_chart_operator(cluster, kubeconfig, tmp_path / "operator.log")
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(example_tenant()))
        tenant = wait_ready(cluster, TENANT)
        namespace = tenant["status"]["namespace"]
        assert namespace == f"cleo-{TENANT}"
        ns = kubectl_json(cluster, "get", "namespace", namespace)
        assert ns["status"]["phase"] == "Active"
        assert ns["metadata"]["labels"]["cleoai.io/tenant"] == TENANT
        assert "cleoai.io/finalizer" in tenant["metadata"]["finalizers"]
        # Every child the reconciler made (a list that grows with it) was made by this
        # identity and is there.
        children = tenant["status"].get("children") or []
        # The example has admins and viewers: binding them is what RBAC's escalation check
        # guards, so `bind` on the tenant ClusterRoles is proven here. No Role is written.
        kinds = {child["kind"] for child in children}
        assert {"Namespace", "RoleBinding", "Deployment"} <= kinds, kinds
        assert "Role" not in kinds, children
        bindings = {
            b["metadata"]["name"]: b
            for b in kubectl_json(cluster, "get", "rolebindings", "-n", namespace)["items"]
        }
        for name in ("cleo-tenant-admin", "cleo-tenant-viewer"):
            assert bindings[name]["roleRef"]["kind"] == "ClusterRole", bindings[name]
            assert bindings[name]["roleRef"]["name"] == name
        # The example's admins (a Group) run the tenant's namespace, and only that one.
        admin = ["--as=someone", "--as-group=acme-admins"]
        assert can_i(cluster, "create", "deployments", "-n", namespace, *admin)
        assert can_i(cluster, "create", "pods", "--subresource=exec", "-n", namespace, *admin)
        assert not can_i(cluster, "create", "deployments", "-n", NAMESPACE, *admin)
        assert not can_i(cluster, "update", "resourcequotas", "-n", namespace, *admin)
        viewer = ["--as=auditor@acme.example"]
        assert can_i(cluster, "list", "pods", "-n", namespace, *viewer)
        assert not can_i(cluster, "get", "secrets", "-n", namespace, *viewer)
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
        assert ("namespaces", "create") in written  # a create: of two racers, one wins
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
        stop_and_check_log(operator, token)


def legacy_objects(namespace: str, uid: str) -> list[dict[str, Any]]:
    """The Roles and RoleBindings an operator before the tenant ClusterRoles wrote."""
    meta = {
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/managed-by": "cleo-operator",
            "app.kubernetes.io/component": "access",
            "cleoai.io/tenant": LEGACY,
        },
        "ownerReferences": [
            {
                "apiVersion": "cleoai.io/v1alpha1",
                "kind": "CleoTenant",
                "name": LEGACY,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    rbac = "rbac.authorization.k8s.io"
    objects: list[dict[str, Any]] = []
    for role, binding, subject in (
        ("cleo-tenant-admin", "cleo-tenant-admins", {"kind": "Group", "name": "legacy-admins"}),
        ("cleo-tenant-viewer", "cleo-tenant-viewers", {"kind": "User", "name": "legacy-viewer"}),
    ):
        objects.append(
            {
                "apiVersion": f"{rbac}/v1",
                "kind": "Role",
                "metadata": {"name": role, **meta},
                "rules": tenant_role_rules()[role],
            }
        )
        objects.append(
            {
                "apiVersion": f"{rbac}/v1",
                "kind": "RoleBinding",
                "metadata": {"name": binding, **meta},
                "roleRef": {"apiGroup": rbac, "kind": "Role", "name": role},
                "subjects": [{**subject, "apiGroup": rbac}],
            }
        )
    return objects


def test_an_upgrade_removes_the_roles_older_versions_wrote(
    own_cluster: LocalCluster, release: Path, tmp_path: Path
) -> None:
    """A tenant as an older operator left it: its admins lose nothing, the old Roles go."""
    del release
    cluster = own_cluster
    namespace = f"cleo-{LEGACY}"
    spec = {
        "deletionPolicy": "Delete",
        "admins": [{"kind": "Group", "name": "legacy-admins"}],
        "viewers": [{"kind": "User", "name": "legacy-viewer"}],
    }
    body = tenant_manifest(LEGACY, spec)
    # The state before the upgrade, made by the admin while no operator runs.
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    uid = kubectl_json(cluster, "get", "cleotenant", LEGACY)["metadata"]["uid"]
    legacy = legacy_objects(namespace, uid)
    # The namespace as an older operator made it: its labels and owner reference carry the
    # tenant's uid, though not yet the cleoai.io/tenant-uid label. Its objects are made
    # before it carries the tenant label: the chart's tenant-protection policy (installed
    # above) keeps everyone but the operator from making objects with the operator's label
    # in a tenant namespace, the admin included, as it should after an upgrade.
    labels = legacy[0]["metadata"]["labels"]
    old_namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {k: v for k, v in labels.items() if k != "cleoai.io/tenant"},
            "ownerReferences": legacy[0]["metadata"]["ownerReferences"],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(old_namespace))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(legacy))
    cluster.kubectl("label", "namespace", namespace, f"cleoai.io/tenant={LEGACY}")
    children = [
        {"apiVersion": "v1", "kind": "Namespace", "namespace": "", "name": namespace},
        *(
            {
                "apiVersion": o["apiVersion"],
                "kind": o["kind"],
                "namespace": namespace,
                "name": o["metadata"]["name"],
            }
            for o in legacy
        ),
    ]
    cluster.kubectl(
        "patch",
        "cleotenant",
        LEGACY,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"namespace": namespace, "children": children}}),
    )
    admin = ["--as=someone", "--as-group=legacy-admins"]
    assert can_i(cluster, "create", "deployments", "-n", namespace, *admin)  # via the old Role

    kubeconfig, token = chart_kubeconfig(cluster)
    operator = start_chart_operator(cluster, kubeconfig, tmp_path / "operator.log")
    try:

        def upgraded() -> dict[str, Any] | None:
            tenant = kubectl_json(cluster, "get", "cleotenant", LEGACY)
            cond = condition(tenant, "Ready")
            kinds = {(c["kind"], c["name"]) for c in tenant["status"].get("children") or []}
            if cond and cond["status"] == "True" and ("Role", "cleo-tenant-admin") not in kinds:
                return dict(tenant)
            return None

        tenant = wait_for(upgraded, timeout=90, what=f"tenant {LEGACY} Ready, without Roles")
        kinds = {(c["kind"], c["name"]) for c in tenant["status"]["children"]}
        assert {("RoleBinding", "cleo-tenant-admin"), ("RoleBinding", "cleo-tenant-viewer")} <= (
            kinds
        )
        assert not {k for k in kinds if k[0] == "Role"}
        # Gone from the namespace, not only from the status: pruned by the chart's identity.
        for obj in legacy:
            kind = obj["kind"].lower()
            assert kubectl_json(cluster, "get", kind, obj["metadata"]["name"], "-n", namespace) is (
                None
            ), obj["metadata"]["name"]
        roles = kubectl_json(cluster, "get", "roles", "-n", namespace)["items"]
        assert roles == []
        # The same people keep the same rights, now through the ClusterRoles.
        assert can_i(cluster, "create", "deployments", "-n", namespace, *admin)
        assert not can_i(cluster, "update", "networkpolicies", "-n", namespace, *admin)
        assert can_i(cluster, "list", "pods", "-n", namespace, "--as=legacy-viewer")
        assert not can_i(cluster, "get", "secrets", "-n", namespace, "--as=legacy-viewer")

        cluster.kubectl("delete", "cleotenant", LEGACY, "--wait=false")
        wait_for(
            lambda: kubectl_json(cluster, "get", "cleotenant", LEGACY) is None,
            timeout=120,
            what=f"tenant {LEGACY} to be finalized and gone",
        )
    finally:
        stop_and_check_log(operator, token)

"""The chart against the real API server: its objects are valid, and its RBAC is enough.

- Every value set the template tests render is accepted by the API server
  (`kubectl apply --dry-run=server`), monitoring kinds aside (their CRDs are not installed).
- Installed cluster-wide, the chart's ServiceAccount holds every permission of
  kube/permissions.py, as the API server itself answers (SelfSubjectAccessReview through
  `missing_permissions`, the check the operator can run at start).
- Installed namespace-scoped, it holds them in the watched namespaces only.
- An identity without them is told precisely what it lacks, where, and why.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.permissions import (
    MissingPermissions,
    access_checks,
    check_permissions,
    granted_triples,
    missing_permissions,
)
from e2e.cluster import LIMITED_USER, LocalCluster
from tests.integration.test_helm_template import CHART, VALUE_SETS

pytestmark = [pytest.mark.cluster]

NAMESPACE = "cleo-helm-it"
WATCHED = ["cleo-helm-it-team-a", "cleo-helm-it-team-b"]
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


def helm(
    cluster: LocalCluster, home: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **cluster.env(),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    result = subprocess.run(
        [str(cluster.bin_dir / "helm"), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result


def client_for(kubeconfig: Path) -> KubeClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return KubeClient(k8s.ApiClient(configuration))


def service_account_client(cluster: LocalCluster, namespace: str, name: str) -> KubeClient:
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout
    return client_for(cluster.kubeconfig_for(f"{namespace}-{name}", token.strip()))


@pytest.fixture(scope="module")
def namespaces(cluster: LocalCluster) -> Iterator[None]:
    for ns in [NAMESPACE, f"{NAMESPACE}-ns", *WATCHED]:
        cluster.kubectl("create", "namespace", ns)
    yield
    for ns in [NAMESPACE, f"{NAMESPACE}-ns", *WATCHED]:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="module")
def installed(cluster: LocalCluster, namespaces: None, helm_home: Path) -> Iterator[dict[str, str]]:
    """Two releases: cluster-wide in NAMESPACE, namespace-scoped to WATCHED in NAMESPACE-ns."""
    del namespaces
    releases = {"it-cleo-operator": NAMESPACE, "it-ns-cleo-operator": f"{NAMESPACE}-ns"}
    helm(cluster, helm_home, "install", "it-cleo-operator", str(CHART), "-n", NAMESPACE)
    helm(
        cluster,
        helm_home,
        "install",
        "it-ns-cleo-operator",
        str(CHART),
        "-n",
        f"{NAMESPACE}-ns",
        "--set-json",
        f"operator.watchNamespaces={json.dumps(WATCHED)}",
    )
    yield releases
    for release, ns in releases.items():
        subprocess.run(
            [str(cluster.bin_dir / "helm"), "uninstall", release, "-n", ns],
            env={**cluster.env(), "HELM_CONFIG_HOME": str(helm_home / "config")},
            capture_output=True,
            check=False,
            timeout=120,
        )


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_value_set_is_accepted_by_the_api_server(
    cluster: LocalCluster, namespaces: None, helm_home: Path, tmp_path: Path, name: str
) -> None:
    del namespaces
    values = dict(VALUE_SETS[name])
    if "operator" in values:
        values["operator"] = {**values["operator"], "watchNamespaces": WATCHED}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    rendered = helm(
        cluster, helm_home, "template", f"dry-{name}", str(CHART), "-n", NAMESPACE, "-f", str(path)
    ).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    kept = [d for d in documents if d["kind"] not in MONITORING_KINDS]
    assert kept, "nothing rendered"
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump_all(kept),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(kept)


def test_cluster_wide_chart_identity_holds_every_permission(
    cluster: LocalCluster, installed: dict[str, str]
) -> None:
    del installed
    kube = service_account_client(cluster, NAMESPACE, "it-cleo-operator")
    assert missing_permissions(kube, operator_namespace=NAMESPACE) == []


def test_namespace_scoped_chart_identity_holds_tenant_rights_only_where_it_watches(
    cluster: LocalCluster, installed: dict[str, str]
) -> None:
    del installed
    kube = service_account_client(cluster, f"{NAMESPACE}-ns", "it-ns-cleo-operator")
    assert (
        missing_permissions(kube, operator_namespace=f"{NAMESPACE}-ns", watch_namespaces=WATCHED)
        == []
    )
    cluster_wide = missing_permissions(kube, operator_namespace=f"{NAMESPACE}-ns")
    missing = {
        (m.check.permission.group, m.check.permission.resource, m.check.verb) for m in cluster_wide
    }
    # Everything namespaced that it holds only in WATCHED is missing across all namespaces;
    # nothing cluster-scoped is.
    assert missing == granted_triples(["tenant"])
    assert {m.check.where() for m in cluster_wide} == {"in all namespaces"}


def test_an_identity_without_the_charts_rbac_is_told_what_it_lacks(
    cluster: LocalCluster,
) -> None:
    kube = client_for(cluster.kubeconfig_for(LIMITED_USER, cluster.limited_token))
    with pytest.raises(MissingPermissions) as raised:
        check_permissions(kube, operator_namespace=NAMESPACE)
    error = raised.value
    assert error.identity == LIMITED_USER
    assert len(error.missing) == len(access_checks(operator_namespace=NAMESPACE))
    message = str(error)
    assert message.startswith(f"{LIMITED_USER} lacks {len(error.missing)} permission(s)")
    assert "get, list, watch, create, patch, delete namespaces cluster-wide" in message
    assert "get, list, watch, patch cleotenants.cleoai.io cluster-wide" in message
    assert f"create events in namespace {NAMESPACE}" in message
    assert "rbac.create=true" in message
    assert cluster.limited_token not in message


def test_one_missing_role_is_named_exactly(
    cluster: LocalCluster, installed: dict[str, str]
) -> None:
    """A ServiceAccount bound to the chart's tenant and operator roles, not the cluster one."""
    del installed
    name = "partial-operator"
    cluster.kubectl("create", "serviceaccount", name, "-n", NAMESPACE)
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        f"{NAMESPACE}-{name}",
        "--clusterrole=it-cleo-operator-tenant",
        f"--serviceaccount={NAMESPACE}:{name}",
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        name,
        "-n",
        NAMESPACE,
        "--role=it-cleo-operator",
        f"--serviceaccount={NAMESPACE}:{name}",
    )
    try:
        kube = service_account_client(cluster, NAMESPACE, name)
        missing = missing_permissions(kube, operator_namespace=NAMESPACE)
        assert {
            (m.check.permission.group, m.check.permission.resource, m.check.verb) for m in missing
        } == granted_triples(["cluster"])
    finally:
        cluster.kubectl("delete", "clusterrolebinding", f"{NAMESPACE}-{name}", check=False)

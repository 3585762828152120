"""The chart against the real API server: its objects are valid, and its RBAC is enough.

- Every value set the template tests render is accepted by the API server
  (`kubectl apply --dry-run=server`), monitoring kinds aside (their CRDs are not installed).
- Installed cluster-wide, the chart's ServiceAccount holds every permission of
  kube/permissions.py, as the API server itself answers (SelfSubjectAccessReview through
  `missing_permissions`, the check the operator can run at start).
- Installed namespace-scoped, it holds them in the watched namespaces only.
- An identity without them is told precisely what it lacks, where, and why.
- The chart's identity may bind the tenant ClusterRoles in a namespace, and no other
  ClusterRole: a RoleBinding to cluster-admin is refused by the API server.
- Without the tenant ClusterRoles, the startup check says so and how to install them.

The releases here leave the tenant ClusterRoles to the session's `crds_installed` (the
generated deploy/rbac/tenant-roles.yaml): their names are cluster-wide, so on a shared
cluster only one owner can create them (rbac.createTenantRoles=false, as the chart's
values say for a second release). e2e/test_helm_install.py installs them with the chart.
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

from cleo_operator.kube.access import (
    MissingPermissions,
    access_checks,
    check_permissions,
    missing_operator_tenant_rules,
    missing_permissions,
    missing_tenant_roles,
)
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.permissions import OPERATOR_BINDING, grants, permissions_for
from cleo_operator.render.rbac import TENANT_ROLES
from e2e.cluster import LIMITED_USER, LocalCluster
from tests.harness.cluster_fixtures import REPO, wait_for
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


# The tenant ClusterRoles and the CRDs come from crds_installed on this shared cluster
# (module docstring); test_helm_crds.py installs the CRDs with a release.
# The tenant-protection admission policy is cluster-wide too (one release may own it) and
# would hold the session's cluster admin off tenant namespaces: the value-set dry runs check
# it, the security tests install it for their module only.
NO_TENANT_ROLES = (
    "--set",
    "rbac.createTenantRoles=false",
    "--set",
    "crds.install=false",
    "--set",
    "admission.tenantProtection.enabled=false",
)


@pytest.fixture(scope="module")
def installed(
    cluster: LocalCluster, crds_installed: None, namespaces: None, helm_home: Path
) -> Iterator[dict[str, str]]:
    """Two releases: cluster-wide in NAMESPACE, namespace-scoped to WATCHED in NAMESPACE-ns."""
    del crds_installed, namespaces
    releases = {"it-cleo-operator": NAMESPACE, "it-ns-cleo-operator": f"{NAMESPACE}-ns"}
    helm(
        cluster,
        helm_home,
        "install",
        "it-cleo-operator",
        str(CHART),
        "-n",
        NAMESPACE,
        *NO_TENANT_ROLES,
    )
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
        *NO_TENANT_ROLES,
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
    tenant_role = "it-cleo-operator-tenant"
    assert missing_permissions(kube, operator_namespace=NAMESPACE, tenant_role=tenant_role) == []
    # The roles exist, too, and its tenant role grants what it needs in tenant namespaces.
    check_permissions(kube, operator_namespace=NAMESPACE, tenant_role=tenant_role)
    assert missing_operator_tenant_rules(kube, tenant_role) == []
    # Which it holds in no namespace before it binds itself there.
    assert missing_permissions(kube, operator_namespace=NAMESPACE) != []


def test_namespace_scoped_chart_identity_holds_tenant_rights_only_where_it_watches(
    cluster: LocalCluster, installed: dict[str, str]
) -> None:
    del installed
    kube = service_account_client(cluster, f"{NAMESPACE}-ns", "it-ns-cleo-operator")
    tenant_role = "it-ns-cleo-operator-tenant"
    assert (
        missing_permissions(
            kube,
            operator_namespace=f"{NAMESPACE}-ns",
            watch_namespaces=WATCHED,
            tenant_role=tenant_role,
        )
        == []
    )
    cluster_wide = missing_permissions(
        kube, operator_namespace=f"{NAMESPACE}-ns", tenant_role=tenant_role
    )
    missing = {
        (m.check.permission.group, m.check.permission.resource, m.check.verb, m.check.name or "")
        for m in cluster_wide
    }
    # Everything namespaced that it holds only in WATCHED is missing across all namespaces
    # (binding its tenant ClusterRole too); nothing cluster-scoped is.
    assert missing == grants(["watch"], permissions_for(tenant_role))
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
    """A ServiceAccount bound to the chart's watch and operator roles, not the cluster one
    (nor the Role for Events in default)."""
    del installed
    name = "partial-operator"
    cluster.kubectl("create", "serviceaccount", name, "-n", NAMESPACE)
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        f"{NAMESPACE}-{name}",
        "--clusterrole=it-cleo-operator-watch",
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
        missing = missing_permissions(
            kube, operator_namespace=NAMESPACE, tenant_role="it-cleo-operator-tenant"
        )
        assert {
            (
                m.check.permission.group,
                m.check.permission.resource,
                m.check.verb,
                m.check.name or "",
            )
            for m in missing
        } == grants(["cluster", "cluster-events"], permissions_for("it-cleo-operator-tenant"))
    finally:
        cluster.kubectl("delete", "clusterrolebinding", f"{NAMESPACE}-{name}", check=False)


def rolebinding(name: str, namespace: str, cluster_role: str) -> dict[str, object]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": [{"kind": "User", "name": "someone", "apiGroup": "rbac.authorization.k8s.io"}],
    }


@pytest.mark.parametrize(
    ("release_namespace", "release", "where"),
    [
        # Never in its own namespace: the operator-scope policy refuses it RBAC writes there.
        (NAMESPACE, "it-cleo-operator", WATCHED[1]),
        (f"{NAMESPACE}-ns", "it-ns-cleo-operator", WATCHED[0]),
    ],
    ids=["cluster-wide", "namespace-scoped"],
)
def test_chart_identity_binds_the_tenant_roles_and_no_other_cluster_role(
    cluster: LocalCluster,
    installed: dict[str, str],
    release_namespace: str,
    release: str,
    where: str,
) -> None:
    """Real writes, not reviews: RBAC's escalation check is the API server's own.

    The tenant roles are bound in tenant namespaces, where the operator holds its tenant
    ClusterRole through its own binding: made here by the admin, as the operator makes it.
    """
    del installed
    kube = service_account_client(cluster, release_namespace, release)
    own = {
        **rolebinding(OPERATOR_BINDING, where, f"{release}-tenant"),
        "subjects": [{"kind": "ServiceAccount", "name": release, "namespace": release_namespace}],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(own))
    if where != release_namespace:
        # A tenant namespace, as the operator labels it: the operator-scope admission
        # policy lets it write nowhere else (tests/security/test_blast_radius.py).
        cluster.kubectl(
            "label",
            "namespace",
            where,
            "app.kubernetes.io/managed-by=cleo-operator",
            "cleoai.io/tenant=it",
            "--overwrite",
        )
    try:
        for role in TENANT_ROLES:
            # It holds none of what the role grants (no pods/exec, no deletecollection):
            # `bind` on the role by name is what lets it through.
            kube.create(rolebinding(f"it-bind-{role}", where, role))
        with pytest.raises(KubeError) as refused:
            kube.create(rolebinding("it-bind-cluster-admin", where, "cluster-admin"))
        assert refused.value.status == 403
        assert "attempting to grant RBAC permissions not currently held" in str(refused.value)
        exec_review = cluster.kubectl(
            "auth",
            "can-i",
            "create",
            "pods",
            "--subresource=exec",
            "-n",
            where,
            f"--as=system:serviceaccount:{release_namespace}:{release}",
            check=False,
        )
        assert exec_review.stdout.strip() == "no"
    finally:
        for name in [*(f"it-bind-{role}" for role in TENANT_ROLES), OPERATOR_BINDING]:
            cluster.kubectl("delete", "rolebinding", name, "-n", where, "--ignore-not-found")
        cluster.kubectl(
            "label", "namespace", where, "app.kubernetes.io/managed-by-", "cleoai.io/tenant-"
        )


def test_missing_tenant_cluster_roles_are_named_with_what_to_do(
    cluster: LocalCluster, kube: KubeClient, crds_installed: None
) -> None:
    """The admin holds every permission; only the two ClusterRoles are missing."""
    del crds_installed
    manifest = REPO / "deploy" / "rbac" / "tenant-roles.yaml"
    assert missing_tenant_roles(kube) == []
    check_permissions(kube, operator_namespace=NAMESPACE)
    cluster.kubectl("delete", "-f", str(manifest), "--wait=true")
    try:
        wait_for(
            lambda: missing_tenant_roles(kube) == list(TENANT_ROLES),
            timeout=30,
            what="the tenant ClusterRoles to be gone",
        )
        with pytest.raises(MissingPermissions) as raised:
            check_permissions(kube, operator_namespace=NAMESPACE)
        error = raised.value
        assert error.missing == []
        assert error.missing_roles == list(TENANT_ROLES)
        message = str(error)
        assert "cleo-tenant-admin, cleo-tenant-viewer do not exist" in message
        assert "install the chart or apply deploy/rbac/tenant-roles.yaml" in message
    finally:
        # Back as crds_installed left them, for the rest of the session.
        cluster.kubectl("apply", "--server-side", "-f", str(manifest))
    assert missing_tenant_roles(kube) == []


def test_a_missing_or_short_operator_tenant_role_is_named(
    cluster: LocalCluster, kube: KubeClient, crds_installed: None
) -> None:
    """The start check reads the ClusterRole the operator binds in tenant namespaces: the
    rights it holds nowhere else are checked there, and a wildcard counts."""
    del crds_installed
    name = "it-short-operator-tenant"
    rules = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]}]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }
    try:
        with pytest.raises(MissingPermissions) as gone:
            check_permissions(kube, operator_namespace=NAMESPACE, tenant_role=name)
        assert gone.value.tenant_role_lacks is None
        assert f"the ClusterRole {name} does not exist" in str(gone.value)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(role))
        lacks = missing_operator_tenant_rules(kube, name)
        assert lacks is not None
        assert ("", "secrets", "patch", "") in lacks
        assert ("", "secrets", "get", "") not in lacks
        assert {(g.group, g.resource, g.verb, g.name) for g in lacks} == grants(["tenant"]) - {
            ("", "secrets", "get", ""),
            ("", "secrets", "create", ""),
        }
        with pytest.raises(MissingPermissions) as short:
            check_permissions(kube, operator_namespace=NAMESPACE, tenant_role=name)
        assert f"the ClusterRole {name}, which cleo-operator binds" in str(short.value)
        assert "create secrets" not in str(short.value).split("lacks", 1)[1].split(". To fix")[0]
        wildcard = {**role, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(wildcard))
        assert missing_operator_tenant_rules(kube, name) == []
        check_permissions(kube, operator_namespace=NAMESPACE, tenant_role=name)
    finally:
        cluster.kubectl("delete", "clusterrole", name, "--ignore-not-found")


def test_namespace_scoped_operator_may_label_only_its_watched_namespaces_as_tenants(
    cluster: LocalCluster, installed: dict[str, str]
) -> None:
    """Watched namespaces exist before a namespace-scoped operator: its operator-scope policy
    lets it label those as tenant namespaces, and no other."""
    del installed
    identity = f"--as=system:serviceaccount:{NAMESPACE}-ns:it-ns-cleo-operator"
    labels = (
        "app.kubernetes.io/managed-by=cleo-operator",
        "cleoai.io/tenant=it",
        # The operator's apply of the namespace sets Pod Security with the tenant labels.
        "pod-security.kubernetes.io/enforce=restricted",
    )
    try:
        allowed = cluster.kubectl("label", "namespace", WATCHED[1], *labels, identity, check=False)
        assert allowed.returncode == 0, allowed.stderr
        refused = cluster.kubectl("label", "namespace", NAMESPACE, *labels, identity, check=False)
        assert refused.returncode != 0
        assert "it-ns-cleo-operator-operator-scope" in refused.stderr
        ns = json.loads(cluster.kubectl("get", "namespace", NAMESPACE, "-o", "json").stdout)
        assert "cleoai.io/tenant" not in (ns["metadata"].get("labels") or {})
    finally:
        cluster.kubectl(
            "label",
            "namespace",
            WATCHED[1],
            "app.kubernetes.io/managed-by-",
            "cleoai.io/tenant-",
            "pod-security.kubernetes.io/enforce-",
            check=False,
        )

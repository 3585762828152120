"""The operator's own blast radius: what its identity may do, tried as a bug (or an attacker
holding its pod) would, against the chart's real RBAC and admission policy.

The chart's RBAC, ServiceAccount and operator-scope ValidatingAdmissionPolicy are rendered
by the real Helm and applied to the local control plane; every attack is made as the
operator's ServiceAccount, through impersonation (which goes through RBAC and admission
with the impersonated identity, as the operator's own token would). Each attack is refused,
and the test then shows nothing changed: no object made, no namespace touched, no right
gained (`kubectl auth can-i` as the operator).

The happy path is here too, as the same identity: a tenant namespace made with the tenant
labels, the operator's RoleBinding applied right after it, and then the writes of a tenant
reconcile and of a backup (a Secret, a CronJob, a Job, a runner Role) allowed there only.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleo_operator.kube.access import check_permissions, missing_operator_tenant_rules
from cleo_operator.kube.client import KubeError
from cleo_operator.kube.kinds import NAMESPACE as NAMESPACE_KIND
from cleo_operator.kube.permissions import OPERATOR_BINDING
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL
from cleo_operator.render.rbac import OperatorAccess, render_operator_binding
from cleo_operator.render.tenant import render_namespace
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.integration.test_helm_cluster import service_account_client
from tests.integration.test_helm_template import CHART

pytestmark = [pytest.mark.cluster, pytest.mark.security]

RELEASE = "blast-cleo-operator"
NAMESPACE = "cleo-blast"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
TENANT_ROLE = f"{RELEASE}-tenant"
VICTIM = "blast-victim"
CANARY = "blast-canary"
TENANT = "blast-tenant"
TENANT_NAMESPACE = "cleo-blast-tenant"

CHART_RBAC = (
    "templates/serviceaccount.yaml",
    "templates/rbac-cluster.yaml",
    "templates/rbac-operator-namespace.yaml",
    "templates/admission-operator-scope.yaml",
)


def chart_objects(cluster: LocalCluster, home: Path) -> list[dict[str, Any]]:
    """The chart's ServiceAccount, RBAC and operator-scope policy, as Helm renders them."""
    only = [arg for path in CHART_RBAC for arg in ("--show-only", path)]
    result = subprocess.run(
        [
            str(cluster.bin_dir / "helm"),
            "template",
            RELEASE,
            str(CHART),
            "-n",
            NAMESPACE,
            "--set",
            "rbac.createTenantRoles=false",  # crds_installed has them (shared cluster)
            *only,
        ],
        env={**cluster.env(), "HELM_CONFIG_HOME": str(home), "HELM_CACHE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def as_operator(
    cluster: LocalCluster, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl as the operator's ServiceAccount (impersonated by the admin)."""
    return cluster.kubectl(*args, f"--as={OPERATOR}", input=input, check=False)


def can_i(cluster: LocalCluster, *args: str) -> bool:
    return as_operator(cluster, "auth", "can-i", *args).stdout.strip() == "yes"


def exists(cluster: LocalCluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, "--ignore-not-found", "-o", "name").stdout.strip() != ""


def refused_by_policy(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and f"{RELEASE}-operator-scope" in result.stderr


def refused_by_rbac(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and f'User "{OPERATOR}" cannot' in result.stderr


def namespace_manifest(name: str, labels: dict[str, str]) -> str:
    return json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    )


@pytest.fixture(scope="module")
def chart_identity(
    cluster: LocalCluster, crds_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The chart's RBAC and policy for RELEASE in NAMESPACE, a canary Secret in kube-system
    and a namespace that is nobody's tenant; the policy active before the tests run."""
    del crds_installed
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("create", "namespace", VICTIM)
    cluster.kubectl(
        "create", "secret", "generic", CANARY, "-n", "kube-system", "--from-literal=k=canary"
    )
    objects = chart_objects(cluster, tmp_path_factory.mktemp("helm"))
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))
    # The policy is compiled and loaded by the API server a moment after it is written.
    probe = namespace_manifest("blast-probe", {})
    wait_for(
        lambda: refused_by_policy(
            as_operator(cluster, "create", "--dry-run=server", "-f", "-", input=probe)
        ),
        timeout=60,
        what="the operator-scope policy to refuse the operator",
    )
    yield
    cluster.kubectl(
        "delete", "-f", "-", "--wait=false", input=yaml.safe_dump_all(objects), check=False
    )
    for ns in (NAMESPACE, VICTIM, TENANT_NAMESPACE):
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    cluster.kubectl("delete", "secret", CANARY, "-n", "kube-system", check=False)


# --------------------------------------------------------------------------- attacks


def test_the_operator_cannot_write_a_secret_in_kube_system(
    cluster: LocalCluster, chart_identity: None
) -> None:
    del chart_identity
    result = as_operator(
        cluster,
        "create",
        "secret",
        "generic",
        "blast-planted",
        "-n",
        "kube-system",
        "--from-literal=k=v",
    )
    assert refused_by_rbac(result), result.stderr
    assert not exists(cluster, "secret", "blast-planted", "-n", "kube-system")
    assert not can_i(cluster, "create", "secrets", "-n", "kube-system")
    assert not can_i(cluster, "patch", "secrets", "-n", "default")


def test_the_operator_cannot_read_secrets_outside_tenant_namespaces(
    cluster: LocalCluster, chart_identity: None
) -> None:
    """No read of kube-system's Secrets: neither one by name nor a list of all of them."""
    del chart_identity
    result = as_operator(cluster, "get", "secret", CANARY, "-n", "kube-system", "-o", "json")
    assert refused_by_rbac(result), result.stderr
    assert "canary" not in result.stdout
    assert "Y2FuYXJ5" not in result.stdout  # base64 of it
    listing = as_operator(cluster, "get", "secrets", "--all-namespaces", "-o", "name")
    assert refused_by_rbac(listing), listing.stderr
    assert CANARY not in listing.stdout
    for verb in ("get", "list", "watch"):
        assert not can_i(cluster, verb, "secrets", "--all-namespaces")
        assert not can_i(cluster, verb, "secrets", "-n", "kube-system")


def operator_binding(namespace: str) -> dict[str, Any]:
    return render_operator_binding(
        tenant=TENANT,
        namespace=namespace,
        access=OperatorAccess(role=TENANT_ROLE, username=OPERATOR),
    )


def test_the_operator_cannot_bind_itself_in_kube_system(
    cluster: LocalCluster, chart_identity: None
) -> None:
    """Its one cluster-wide RBAC write (its own RoleBinding, by name) stops at the policy."""
    del chart_identity
    for namespace in ("kube-system", "default", VICTIM):
        result = as_operator(
            cluster,
            "apply",
            "--server-side",
            "-f",
            "-",
            input=json.dumps(operator_binding(namespace)),
        )
        assert refused_by_policy(result), result.stderr
        assert "may write only in tenant namespaces" in result.stderr
        assert not exists(cluster, "rolebinding", OPERATOR_BINDING, "-n", namespace)
    # Under any other name RBAC refuses it already, and so it does for a ClusterRoleBinding.
    other = {**operator_binding("kube-system")}
    other["metadata"] = {**other["metadata"], "name": "blast-other"}
    result = as_operator(cluster, "create", "-f", "-", input=json.dumps(other))
    assert refused_by_rbac(result), result.stderr
    assert not exists(cluster, "rolebinding", "blast-other", "-n", "kube-system")
    assert not can_i(cluster, "get", "secrets", "-n", "kube-system")
    assert not can_i(cluster, "create", "clusterrolebindings")


def test_the_operator_cannot_delete_a_namespace_that_is_not_a_tenants(
    cluster: LocalCluster, chart_identity: None
) -> None:
    del chart_identity
    # (kube-system and default are protected by the API server itself.)
    for namespace in (VICTIM, NAMESPACE):
        result = as_operator(cluster, "delete", "namespace", namespace, "--wait=false")
        assert refused_by_policy(result), result.stderr
        phase = cluster.kubectl("get", "namespace", namespace, "-o", "jsonpath={.status.phase}")
        assert phase.stdout == "Active", namespace


def test_the_operator_cannot_create_a_namespace_without_the_tenant_labels(
    cluster: LocalCluster, chart_identity: None
) -> None:
    del chart_identity
    for labels in ({}, {MANAGED_BY_LABEL: MANAGED_BY}, {TENANT_LABEL: "x"}):
        manifest = namespace_manifest("blast-unlabelled", labels)
        result = as_operator(cluster, "create", "-f", "-", input=manifest)
        assert refused_by_policy(result), (labels, result.stderr)
        assert not exists(cluster, "namespace", "blast-unlabelled")


def assert_labelling_as_a_tenants_is_refused(cluster: LocalCluster, namespace: str) -> None:
    """The operator labelling `namespace` a tenant's is refused, and its labels stay."""
    before = cluster.kubectl("get", "namespace", namespace, "-o", "json").stdout
    result = as_operator(
        cluster,
        "label",
        "namespace",
        namespace,
        f"{MANAGED_BY_LABEL}={MANAGED_BY}",
        f"{TENANT_LABEL}=blast",
    )
    assert refused_by_policy(result), result.stderr
    after = cluster.kubectl("get", "namespace", namespace, "-o", "json").stdout
    assert json.loads(after)["metadata"].get("labels") == json.loads(before)["metadata"].get(
        "labels"
    )


def test_the_operator_cannot_turn_a_namespace_into_a_tenants_by_labelling_it(
    cluster: LocalCluster, chart_identity: None
) -> None:
    """Labelling kube-system as a tenant namespace would open it to everything else."""
    del chart_identity
    for namespace in ("kube-system", VICTIM):
        assert_labelling_as_a_tenants_is_refused(cluster, namespace)


def test_only_a_namespace_marked_for_adoption_may_become_a_tenants(
    cluster: LocalCluster, chart_identity: None
) -> None:
    """The adoption mark (cleoai.io/adopt, written by the namespace's owner) is the one way
    an existing namespace becomes a tenant's; the policy accepts it, but never on kube-* or
    default, where a mark would hand the operator the cluster's own namespaces."""
    del chart_identity
    marked = "blast-marked"
    cluster.kubectl("create", "namespace", marked)
    try:
        for namespace in (marked, "kube-public", "default"):
            cluster.kubectl(
                "annotate", "--overwrite", "namespace", namespace, "cleoai.io/adopt=blast"
            )
        for namespace in ("kube-public", "default"):
            assert_labelling_as_a_tenants_is_refused(cluster, namespace)
        # As the operator's apply does: the tenant and Pod Security labels in one write.
        result = as_operator(
            cluster,
            "label",
            "namespace",
            marked,
            *(f"{k}={v}" for k, v in tenant_namespace_labels("blast").items()),
        )
        assert result.returncode == 0, result.stderr
    finally:
        for namespace in ("kube-public", "default"):
            cluster.kubectl("annotate", "namespace", namespace, "cleoai.io/adopt-", check=False)
        cluster.kubectl("delete", "namespace", marked, "--wait=false", check=False)


def test_the_operator_cannot_write_cluster_scoped_objects_but_its_own(
    cluster: LocalCluster, chart_identity: None
) -> None:
    del chart_identity
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "blast-escalate"},
        "rules": [],
    }
    result = as_operator(cluster, "create", "-f", "-", input=json.dumps(role))
    assert refused_by_rbac(result), result.stderr
    assert not exists(cluster, "clusterrole", "blast-escalate")
    for verb, resource in [("escalate", "clusterroles"), ("bind", "clusterroles/cluster-admin")]:
        assert not can_i(cluster, verb, resource)


# --------------------------------------------------------------------------- happy path


def test_the_operator_writes_in_a_tenant_namespace_only_through_its_binding(
    cluster: LocalCluster, chart_identity: None
) -> None:
    """As the chart's identity, with its real token: the tenant reconcile's order of writes.

    The namespace (with the tenant labels), then the operator's RoleBinding, then what a
    tenant and its backups write there: Secrets, a runner Role bound to a runner, a
    CronJob and a Job. Before the binding, the same Secret is refused: the rights come
    from the binding, in this namespace only.
    """
    del chart_identity
    kube = service_account_client(cluster, NAMESPACE, RELEASE)
    check_permissions(kube, operator_namespace=NAMESPACE, tenant_role=TENANT_ROLE)
    assert missing_operator_tenant_rules(kube, TENANT_ROLE) == []
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": TENANT_NAMESPACE, "labels": tenant_namespace_labels(TENANT)},
        }
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cleo-database", "namespace": TENANT_NAMESPACE},
        "stringData": {"k": "v"},
    }
    with pytest.raises(KubeError) as refused:
        kube.apply(secret)
    assert refused.value.status == 403
    kube.apply(operator_binding(TENANT_NAMESPACE))
    wait_for(
        lambda: can_i(cluster, "create", "secrets", "-n", TENANT_NAMESPACE),
        timeout=30,
        what="the operator's binding to take effect",
    )
    kube.apply(secret)
    runner_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "cleo-backup-runner", "namespace": TENANT_NAMESPACE},
        "rules": [
            {"apiGroups": ["cleoai.io"], "resources": ["cleobackups/status"], "verbs": ["patch"]}
        ],
    }
    kube.apply(runner_role)
    job_spec = {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "example.invalid/runner:1"}],
            }
        }
    }
    kube.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "cleo-backup-nightly", "namespace": TENANT_NAMESPACE},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": job_spec}},
        }
    )
    kube.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "cleo-backup-once", "namespace": TENANT_NAMESPACE},
            "spec": job_spec,
        }
    )
    assert exists(cluster, "cronjob", "cleo-backup-nightly", "-n", TENANT_NAMESPACE)
    # Nowhere else: the binding is in this namespace only.
    assert not can_i(cluster, "create", "secrets", "-n", VICTIM)
    assert not can_i(cluster, "create", "cronjobs.batch", "-n", "kube-system")
    # And the tenant namespace, being a tenant's, may be deleted by it.
    kube.delete(NAMESPACE_KIND, TENANT_NAMESPACE)


# --------------------------------------------------------------------------- Pod Security


def tenant_namespace_labels(tenant: str) -> dict[str, str]:
    """The labels the operator gives a tenant namespace (render_namespace's, Pod Security
    `restricted` included), without its owner reference."""
    owner = {"apiVersion": "cleoai.io/v1alpha1", "kind": "CleoTenant", "name": tenant, "uid": "u"}
    labels = render_namespace(tenant=tenant, namespace="x", owner=owner)["metadata"]["labels"]
    assert isinstance(labels, dict)
    return {str(k): str(v) for k, v in labels.items()}


def test_the_operator_cannot_make_a_tenant_namespace_that_admits_privileged_pods(
    cluster: LocalCluster, chart_identity: None
) -> None:
    """Tenant labels with Pod Security `privileged` (or no enforce label, or an old
    version) would let the operator run a privileged pod there, which is node root."""
    del chart_identity
    restricted = tenant_namespace_labels("blast")
    for changed in (
        {"pod-security.kubernetes.io/enforce": "privileged"},
        {"pod-security.kubernetes.io/enforce": "baseline"},
        {"pod-security.kubernetes.io/enforce-version": "v1.0"},
    ):
        manifest = namespace_manifest("blast-privileged", {**restricted, **changed})
        result = as_operator(cluster, "create", "-f", "-", input=manifest)
        assert refused_by_policy(result), (changed, result.stderr)
        assert not exists(cluster, "namespace", "blast-privileged")
    without = {k: v for k, v in restricted.items() if k != "pod-security.kubernetes.io/enforce"}
    result = as_operator(
        cluster, "create", "-f", "-", input=namespace_manifest("blast-privileged", without)
    )
    assert refused_by_policy(result), result.stderr
    assert not exists(cluster, "namespace", "blast-privileged")


def test_the_operator_cannot_loosen_pod_security_of_a_tenant_namespace(
    cluster: LocalCluster, chart_identity: None
) -> None:
    del chart_identity
    name = "cleo-blast-psa"
    created = as_operator(
        cluster,
        "create",
        "-f",
        "-",
        input=namespace_manifest(name, tenant_namespace_labels("blast-psa")),
    )
    assert created.returncode == 0, created.stderr
    try:
        before = json.loads(cluster.kubectl("get", "namespace", name, "-o", "json").stdout)
        for label in (
            "pod-security.kubernetes.io/enforce=privileged",
            "pod-security.kubernetes.io/enforce-version=v1.0",
            "pod-security.kubernetes.io/warn=privileged",
        ):
            result = as_operator(cluster, "label", "--overwrite", "namespace", name, label)
            assert refused_by_policy(result), (label, result.stderr)
        result = as_operator(
            cluster, "label", "namespace", name, "pod-security.kubernetes.io/enforce-"
        )
        assert refused_by_policy(result), result.stderr
        after = json.loads(cluster.kubectl("get", "namespace", name, "-o", "json").stdout)
        assert after["metadata"]["labels"] == before["metadata"]["labels"]
        # Its own other writes on the namespace (the orphan mark it removes) still pass.
        allowed = as_operator(cluster, "label", "namespace", name, "cleoai.io/orphaned=true")
        assert allowed.returncode == 0, allowed.stderr
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_operator_cannot_bind_itself_in_its_own_namespace(
    cluster: LocalCluster, chart_identity: None
) -> None:
    """Its RoleBinding (allowed by name everywhere by RBAC) in its own namespace would give
    it Deployments and Jobs next to its own pod and keys."""
    del chart_identity
    result = as_operator(
        cluster, "apply", "--server-side", "-f", "-", input=json.dumps(operator_binding(NAMESPACE))
    )
    assert refused_by_policy(result), result.stderr
    assert "in its own namespace" in result.stderr
    assert not exists(cluster, "rolebinding", OPERATOR_BINDING, "-n", NAMESPACE)
    assert not can_i(cluster, "create", "deployments.apps", "-n", NAMESPACE)
    assert not can_i(cluster, "create", "jobs.batch", "-n", NAMESPACE)

"""A tenant admin as the API server sees one, for the tests of tenant-writable objects.

A tenant admin is a user of a CleoTenant's `spec.admins`, bound to the ClusterRole
`cleo-tenant-admin` by the RoleBinding `render_role_bindings` renders in the tenant's
namespace. The tests' attacker is a real credential: a ServiceAccount token from the
TokenRequest API, whose user name (`system:serviceaccount:<ns>:<name>`) is named in
`spec.admins` as a `User`, exactly as a person's name would be. The ServiceAccount lives in a
namespace of its own with no rights there; everything it may do comes from that RoleBinding.
The API server authenticates it, authorizes it with the real RBAC rules and admits it
through the real admission policies; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cleo_operator.api.tenant import CleoTenantSpec, Subject
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import NAMESPACE, SERVICE_ACCOUNT
from cleo_operator.render.rbac import render_role_bindings
from e2e.cluster import OPERATOR_USER, LocalCluster
from tests.harness.cluster_fixtures import wait_for

TENANT_NAMESPACE_LABEL = "cleoai.io/tenant"
REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = REPO / "deploy" / "admission" / "tenant-protection.yaml"
SHIPPED_OPERATOR = "system:serviceaccount:cleo-system:cleo-operator"
MESSAGE = "cleo-tenant-protection:"
"""How every refusal of the tenant-protection policy starts."""


def new_name(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


ATTACKER_NAMESPACE = "cleo-test-attackers"
ATTACKER_ACCOUNT = "mallory"
ATTACKER = f"system:serviceaccount:{ATTACKER_NAMESPACE}:{ATTACKER_ACCOUNT}"
"""The attacker's user name, as `spec.admins` names it (kind User)."""


def client_for_token(cluster: LocalCluster, user: str, token: str) -> KubeClient:
    """A client that authenticates with `token` (no other credential)."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig_for(user, token)), client_configuration=configuration
    )
    return KubeClient(k8s.ApiClient(configuration))


def attacker_client(cluster: LocalCluster, kube: KubeClient) -> KubeClient:
    """The attacker's own credential: a fresh token of its ServiceAccount (made if absent)."""
    return _account_client(cluster, kube, ATTACKER_ACCOUNT, ATTACKER)


def _account_client(
    cluster: LocalCluster, kube: KubeClient, account: str, username: str
) -> KubeClient:
    """A client with a fresh token of ServiceAccount `account` of the attackers' namespace
    (made if absent), checked to authenticate as `username`."""
    if kube.get(NAMESPACE, ATTACKER_NAMESPACE) is None:
        kube.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ATTACKER_NAMESPACE}}
        )
    if kube.get(SERVICE_ACCOUNT, account, namespace=ATTACKER_NAMESPACE) is None:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": account, "namespace": ATTACKER_NAMESPACE},
            }
        )
    issued = kube.request(
        "POST",
        SERVICE_ACCOUNT.path(namespace=ATTACKER_NAMESPACE, name=account) + "/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    client = client_for_token(cluster, account, issued["status"]["token"])
    review = client.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert review["status"]["userInfo"]["username"] == username, review
    return client


PLATFORM_ADMIN_ACCOUNT = "patricia"
PLATFORM_ADMIN = f"system:serviceaccount:{ATTACKER_NAMESPACE}:{PLATFORM_ADMIN_ACCOUNT}"
PLATFORM_ADMIN_ROLE = "cleo-test-platform-admin"


def platform_admin_client(cluster: LocalCluster, kube: KubeClient) -> KubeClient:
    """A platform admin's own credential: a ServiceAccount token (as `attacker_client`)
    whose account may update CleoTenants cluster-wide, exec into pods and patch Services, by a
    ClusterRoleBinding (the test's stand-in for the platform team's role)."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": PLATFORM_ADMIN_ROLE},
        "rules": [
            {
                "apiGroups": ["cleoai.io"],
                "resources": ["cleotenants"],
                "verbs": ["get", "list", "update", "patch"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "patch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": PLATFORM_ADMIN_ROLE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": PLATFORM_ADMIN_ROLE,
        },
        "subjects": [{"kind": "User", "name": PLATFORM_ADMIN}],
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    return _account_client(cluster, kube, PLATFORM_ADMIN_ACCOUNT, PLATFORM_ADMIN)


LB_CONTROLLER_ACCOUNT = "lb-controller"
LB_CONTROLLER_ROLE = "cleo-test-lb-controller"


def load_balancer_controller_client(cluster: LocalCluster, kube: KubeClient) -> KubeClient:
    """A load-balancer controller's credential (MetalLB's, Cilium's, the cloud's): a
    ServiceAccount token whose account may write every Service's status, cluster-wide."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": LB_CONTROLLER_ROLE},
        "rules": [
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["services/status"], "verbs": ["update", "patch"]},
        ],
    }
    user = f"system:serviceaccount:{ATTACKER_NAMESPACE}:{LB_CONTROLLER_ACCOUNT}"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": LB_CONTROLLER_ROLE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": LB_CONTROLLER_ROLE,
        },
        "subjects": [{"kind": "User", "name": user}],
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    return _account_client(cluster, kube, LB_CONTROLLER_ACCOUNT, user)


def bind_tenant_admin(
    kube: KubeClient, *, tenant: str, namespace: str, user: str, backup_requests: bool = False
) -> None:
    """The RoleBindings the operator renders for `spec.admins: [{kind: User, name: user}]`
    (with `backup_requests`: as it does while it sees the tenant-protection policy).

    Without the owner reference: the tests have no CleoTenant object to own it, and an owner
    that does not exist would make the garbage collector delete the binding.
    """
    spec = CleoTenantSpec.model_validate({"admins": [{"kind": "User", "name": user}]})
    assert spec.admins == [Subject(kind="User", name=user)]
    bindings = render_role_bindings(
        tenant=tenant,
        namespace=namespace,
        owner={
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": "CleoTenant",
            "name": tenant,
            "uid": "00000000-0000-0000-0000-000000000000",
            "controller": True,
            "blockOwnerDeletion": True,
        },
        spec=spec,
        backup_requests=backup_requests,
    )
    for binding in bindings:
        binding["metadata"].pop("ownerReferences", None)
        kube.apply(binding)


def create_tenant_namespace(kube: KubeClient, name: str, tenant: str) -> None:
    """A namespace labelled as the operator labels a tenant's."""
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {TENANT_NAMESPACE_LABEL: tenant}},
        }
    )


def refused(call: Any, *args: Any, **kwargs: Any) -> KubeError:
    """Run a write that must be refused; return the API server's error."""
    try:
        call(*args, **kwargs)
    except KubeError as exc:
        return exc
    raise AssertionError(f"{getattr(call, '__name__', call)} was not refused")


# -- the tenant-protection policy, installed for one test module ------------------------------


def policy_objects(operator_user: str) -> list[dict[str, Any]]:
    """The shipped policy and binding, for an operator running as `operator_user`."""
    text = POLICY_FILE.read_text()
    assert text.count(SHIPPED_OPERATOR) == 1
    return [d for d in yaml.safe_load_all(text.replace(SHIPPED_OPERATOR, operator_user)) if d]


def operator_client(cluster: LocalCluster) -> KubeClient:
    """A client authenticated as the operator under test (its own token, not impersonated)."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig_for(OPERATOR_USER, cluster.operator_token)),
        client_configuration=configuration,
    )
    return KubeClient(k8s.ApiClient(configuration))


def _probe(kube: KubeClient, probe_namespace: str) -> KubeError | None:
    """Create a ConfigMap with the operator's label: None when admitted, else the refusal."""
    try:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "generateName": "probe-",
                    "namespace": probe_namespace,
                    "labels": {"app.kubernetes.io/managed-by": "cleo-operator"},
                },
            }
        )
    except KubeError as exc:
        return exc
    return None


def install_policy(cluster: LocalCluster, kube: KubeClient, probe_namespace: str) -> None:
    """Install the shipped policy (for the tests' operator) and wait until it refuses."""
    manifest = yaml.safe_dump_all(policy_objects(OPERATOR_USER))
    cluster.kubectl("apply", "--server-side", "-f", "-", input=manifest)

    # A policy takes a moment to be compiled and bound: wait until it refuses a probe.
    def active() -> bool:
        refusal = _probe(kube, probe_namespace)
        return refusal is not None and MESSAGE in refusal.message

    wait_for(active, timeout=60, interval=0.5, what="the admission policy to be active")


def remove_policy(cluster: LocalCluster, kube: KubeClient, probe_namespace: str) -> None:
    """Remove the policy and wait until the API server no longer applies it."""
    manifest = yaml.safe_dump_all(policy_objects(OPERATOR_USER))
    cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest)

    # The API server drops a deleted policy a moment later, as it compiled it a moment after
    # it was made: wait until the probe is accepted, so the next module (which writes such
    # labels as a cluster admin) never meets a policy this module no longer owns.
    def gone() -> bool:
        refusal = _probe(kube, probe_namespace)
        if refusal is None:
            return True
        if MESSAGE in refusal.message:
            return False
        raise refusal

    wait_for(gone, timeout=60, interval=0.5, what="the admission policy to be gone")


@contextlib.contextmanager
def tenant_protection(cluster: LocalCluster, kube: KubeClient) -> Iterator[None]:
    """The shipped policy, installed while the block runs (probed in a namespace of its own)."""
    probe = new_name("policy-probe")
    create_tenant_namespace(kube, probe, "probe")
    try:
        install_policy(cluster, kube, probe)
        yield
    finally:
        remove_policy(cluster, kube, probe)
        kube.delete(NAMESPACE, probe)

"""The tenant-protection admission policy against a tenant admin, on the real API server.

deploy/admission/tenant-protection.yaml is installed as shipped, with one change: the
operator's identity is the one the tests run the operator as (`OPERATOR_USER`) instead of
`system:serviceaccount:cleo-system:cleo-operator`. The tenant and its backup objects are
written by the operator's own reconciler and renderers under that identity, with the policy
in place. Then a tenant admin (a `spec.admins` user, bound to `cleo-tenant-admin` by the
operator's RoleBinding, acting through impersonation) tries to change, delete or imitate
them: each write is refused with the policy's message and nothing changes. A cluster admin
other than the operator (RBAC would allow everything) is refused too, which shows the policy
itself, not RBAC, refusing. The operator's reconcile still converges and repairs drift, and
the controllers that act for it (namespace deletion, garbage collection, Jobs) still work.

The policy is installed for this module only and removed afterwards: the rest of the test
session writes into tenant namespaces as a cluster admin.
"""

from __future__ import annotations

import base64
import copy
import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from cleo_operator.api.backup import CleoBackupSpec
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.keys import TENANT_KEYRING_SECRET, read_secret
from cleo_operator.kube.kinds import (
    CONFIG_MAP,
    CRON_JOB,
    DEPLOYMENT,
    KINDS,
    NAMESPACE,
    NETWORK_POLICY,
    POD,
    REPLICA_SET,
    ROLE,
    ROLE_BINDING,
    SECRET,
    SERVICE,
    SERVICE_ACCOUNT,
    TENANT,
)
from cleo_operator.reconcile.encryption import EncryptionPart
from cleo_operator.reconcile.keys import ensure_operator_keys
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.backup import BackupPodSettings, render_backup
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.specs import tenant_manifest
from tests.security.tenant_writable_support import (
    ATTACKER,
    MESSAGE,
    REPO,
    attacker_client,
    install_policy,
    load_balancer_controller_client,
    new_name,
    operator_client,
    platform_admin_client,
    refused,
    remove_policy,
)

pytestmark = [
    pytest.mark.security,
    pytest.mark.cluster,
    pytest.mark.usefixtures("without_session_operator"),
]

POLICY = "cleo-tenant-protection"
T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)


RUNNER_LABELS = {
    "app.kubernetes.io/name": "cleo-backup",
    "app.kubernetes.io/component": "backup",
    "cleoai.io/backup": "nightly",
}


def pod(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod that passes Pod Security restricted, with `labels`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "c",
                    "image": "registry.example.com/anything:1",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


@dataclass
class Scene:
    """A tenant the operator made with the policy installed, and its admin (the attacker)."""

    cluster: LocalCluster
    tenant: str
    namespace: str
    operator: KubeClient
    admin: KubeClient
    attacker: KubeClient
    reconciler: TenantReconciler
    backup: str

    def managed(self) -> list[tuple[str, str, str]]:
        """(apiVersion, kind, name) of every object labelled managed-by cleo-operator here."""
        found = []
        for (api_version, kind), k in KINDS.items():
            if not k.namespaced or kind in {"Event", "Pod", "EndpointSlice", "Endpoints"}:
                continue
            try:
                items = self.admin.list(
                    k,
                    namespace=self.namespace,
                    label_selector="app.kubernetes.io/managed-by=cleo-operator",
                )
            except KubeError:
                continue
            found += [(api_version, kind, i["metadata"]["name"]) for i in items]
        return sorted(found)

    def snapshot(self) -> dict[tuple[str, str, str], str]:
        """resourceVersion of every managed object and of the runner's objects."""
        versions = {}
        for api_version, kind, name in self.managed():
            obj = self.admin.get(KINDS[(api_version, kind)], name, namespace=self.namespace)
            assert obj is not None
            versions[(api_version, kind, name)] = obj["metadata"]["resourceVersion"]
        return versions


@pytest.fixture(scope="module")
def scene(cluster: LocalCluster, kube: KubeClient, crds_installed: None) -> Iterator[Scene]:
    operator = operator_client(cluster)
    operator_namespace = new_name("twa-op")
    operator.create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": operator_namespace}}
    )
    keys = ensure_operator_keys(
        operator, operator_namespace=operator_namespace, kek_dir=None, now=T0
    )
    tenant = new_name("twa")
    namespace = f"cleo-{tenant}"
    probe = new_name("twa-probe")
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": probe, "labels": {"cleoai.io/tenant": "probe"}},
        }
    )
    install_policy(cluster, kube, probe)
    spec = yaml.safe_load((REPO / "examples" / "tenant.yaml").read_text())["spec"]
    spec.update(
        namespace=namespace,
        admins=[{"kind": "User", "name": ATTACKER}],
        deletionPolicy="Delete",
    )
    spec["autoscaling"]["minReplicas"] = 1
    spec["podDisruptionBudget"] = {"minAvailable": 1}
    operator.create(tenant_manifest(tenant, spec))
    reconciler = TenantReconciler(operator, parts=[EncryptionPart(operator, keys)])
    s = Scene(
        cluster=cluster,
        tenant=tenant,
        namespace=namespace,
        operator=operator,
        admin=kube,
        attacker=attacker_client(cluster, kube),
        reconciler=reconciler,
        backup="nightly",
    )
    try:
        wait_for(
            lambda: reconciler.reconcile(tenant).ready,
            timeout=120,
            interval=1,
            what="the tenant to be Ready with the policy installed",
        )
        owner = operator.get(TENANT, tenant)
        assert owner is not None
        backup_spec = CleoBackupSpec.model_validate(
            {
                "tenant": tenant,
                "schedule": "0 3 * * *",
                "destination": {"type": "pvc", "pvc": {"claimName": "backups"}},
            }
        )
        for obj in render_backup(
            name=s.backup,
            namespace=namespace,
            uid=owner["metadata"]["uid"],
            tenant=tenant,
            spec=backup_spec,
            settings=BackupPodSettings(image="registry.example.com/cleo-operator:1"),
        ):
            # Owned by the CleoTenant here (there is no CleoBackup object in this test).
            obj["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": "cleoai.io/v1alpha1",
                    "kind": "CleoTenant",
                    "name": tenant,
                    "uid": owner["metadata"]["uid"],
                }
            ]
            operator.apply(obj)
        yield s
    finally:
        operator.delete(TENANT, tenant)
        kube.delete(NAMESPACE, namespace)
        remove_policy(cluster, kube, probe)
        kube.delete(NAMESPACE, probe)
        kube.delete(NAMESPACE, operator_namespace)


# -- the attacks ----------------------------------------------------------------------------


def test_the_tenant_admin_cannot_change_or_delete_the_keyring(scene: Scene) -> None:
    before = scene.snapshot()
    stored = read_secret(scene.attacker, namespace=scene.namespace, name=TENANT_KEYRING_SECRET)
    assert stored is not None, "RBAC lets the tenant admin read it"
    forged = {
        k: base64.b64encode(b"\x00" * 32).decode() for k in stored.data if k != "keyring.json"
    }

    changed = refused(
        scene.attacker.patch_merge,
        SECRET,
        TENANT_KEYRING_SECRET,
        {"data": forged},
        namespace=scene.namespace,
    )
    deleted = refused(
        scene.attacker.request,
        "DELETE",
        f"/api/v1/namespaces/{scene.namespace}/secrets/{TENANT_KEYRING_SECRET}",
    )

    assert changed.status == 403
    assert MESSAGE in changed.message
    assert "may not change secrets" in changed.message
    assert ATTACKER in changed.message, changed.message
    assert "may not delete secrets" in deleted.message
    assert scene.snapshot() == before


def test_every_managed_object_is_refused_to_the_tenant_admin(scene: Scene) -> None:
    """Each object the operator manages: a label patch and a delete, both refused."""
    before = scene.snapshot()
    kinds = {kind for _, kind, _ in before}
    assert {
        "Secret",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "RoleBinding",
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "CronJob",
        "Role",
    } <= kinds, kinds
    for api_version, kind, name in before:
        k = KINDS[(api_version, kind)]
        for who in (scene.attacker, scene.admin):
            patch = refused(
                who.patch_merge,
                k,
                name,
                {"metadata": {"labels": {"pwned": "yes"}}},
                namespace=scene.namespace,
            )
            assert patch.status in (403, 404), (kind, name, patch)
            delete = refused(who.request, "DELETE", k.path(namespace=scene.namespace, name=name))
            assert delete.status == 403, (kind, name, delete)
            if who is scene.admin:
                # RBAC allows the cluster admin everything: the policy refused.
                assert MESSAGE in patch.message, (kind, patch.message)
                assert MESSAGE in delete.message, (kind, delete.message)
    assert scene.snapshot() == before


def test_a_pod_with_the_runners_labels_is_refused(scene: Scene) -> None:
    labels = {**RUNNER_LABELS, "cleoai.io/tenant": scene.tenant}
    created = refused(scene.attacker.create, pod("escape", scene.namespace, labels))
    assert created.status == 403
    assert "may not create pods" in created.message
    assert "default-deny egress" in created.message
    # One of the two labels the NetworkPolicy selects on is enough to be refused.
    only_backup = refused(
        scene.attacker.create, pod("escape2", scene.namespace, {"cleoai.io/backup": "nightly"})
    )
    assert MESSAGE in only_backup.message
    assert scene.admin.get(POD, "escape", namespace=scene.namespace) is None
    assert scene.admin.get(POD, "escape2", namespace=scene.namespace) is None


def test_a_pod_labelled_as_the_pooler_is_refused(scene: Scene) -> None:
    """Its Service would send the workload's connections (and the operator's check) to it."""
    labels = {"app.kubernetes.io/name": "cleo-pooler", "cleoai.io/tenant": scene.tenant}
    created = refused(scene.attacker.create, pod("pooler-twin", scene.namespace, labels))
    assert created.status == 403
    assert "take the pooler's connections" in created.message
    scene.attacker.create(pod("plain", scene.namespace, {"app": "mine"}))
    relabel = refused(
        scene.attacker.patch_merge,
        POD,
        "plain",
        {"metadata": {"labels": {"app.kubernetes.io/name": "cleo-pooler"}}},
        namespace=scene.namespace,
    )
    assert MESSAGE in relabel.message
    assert scene.admin.get(POD, "pooler-twin", namespace=scene.namespace) is None
    scene.admin.delete(POD, "plain", namespace=scene.namespace)


def test_the_poolers_replica_set_cannot_be_deleted_or_edited_by_the_tenant_admin(
    scene: Scene,
) -> None:
    """The pooler's ReplicaSet carries the pooler's labels (the deployment controller copies
    the pod template's), not the operator's managed-by: the policy protects it by the same
    labels whether old or new (one predicate), so a delete is refused too."""
    labels = {"app.kubernetes.io/name": "cleo-pooler", "cleoai.io/tenant": scene.tenant}
    template = pod("unused", scene.namespace, labels)
    name = "cleo-pooler-" + new_name("rs")[-8:]
    scene.operator.create(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": scene.namespace, "labels": labels},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
            },
        }
    )
    try:
        deleted = refused(scene.attacker.delete, REPLICA_SET, name, namespace=scene.namespace)
        assert deleted.status == 403
        edited = refused(
            scene.attacker.patch_merge,
            REPLICA_SET,
            name,
            {"metadata": {"annotations": {"x": "y"}}},
            namespace=scene.namespace,
        )
        assert edited.status == 403
        assert scene.admin.get(REPLICA_SET, name, namespace=scene.namespace) is not None
    finally:
        scene.operator.delete(REPLICA_SET, name, namespace=scene.namespace)


def test_the_poolers_config_secret_cannot_be_planted_or_edited(scene: Scene) -> None:
    """A planted config would choose the auth file; an edit would change it under the pods."""
    planted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cleo-pooler", "namespace": scene.namespace},
        "stringData": {"userlist.txt": '"cleo_x" "chosen"\n'},
    }
    assert refused(scene.attacker.create, planted).status == 403
    assert scene.admin.get(SECRET, "cleo-pooler", namespace=scene.namespace) is None
    # Made by the operator (its labels), it cannot be changed or deleted by the admin.
    made = scene.operator.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "cleo-pooler",
                "namespace": scene.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "cleo-operator",
                    "cleoai.io/tenant": scene.tenant,
                },
            },
            "stringData": {"userlist.txt": '"cleo_x" "operators"\n'},
        }
    )
    edit = {"stringData": {"userlist.txt": '"cleo_x" "chosen"\n'}}
    changed = refused(
        scene.attacker.patch_merge, SECRET, "cleo-pooler", edit, namespace=scene.namespace
    )
    assert changed.status == 403
    deleted = refused(
        scene.attacker.request,
        "DELETE",
        SECRET.path(namespace=scene.namespace, name="cleo-pooler"),
    )
    assert deleted.status == 403
    kept = scene.admin.get(SECRET, "cleo-pooler", namespace=scene.namespace)
    assert kept is not None
    assert kept["data"] == made["data"]
    scene.operator.delete(SECRET, "cleo-pooler", namespace=scene.namespace)


def test_a_workload_whose_pod_template_has_the_runners_labels_is_refused(scene: Scene) -> None:
    template = {
        "metadata": {"labels": RUNNER_LABELS},
        "spec": {**pod("x", scene.namespace, {})["spec"], "restartPolicy": "Never"},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "escape-job", "namespace": scene.namespace},
        "spec": {"template": template},
    }
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "escape-cron", "namespace": scene.namespace},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "escape-deploy", "namespace": scene.namespace},
        "spec": {
            "selector": {"matchLabels": RUNNER_LABELS},
            "template": {**template, "spec": {**template["spec"], "restartPolicy": "Always"}},
        },
    }
    for obj in (job, cron, deployment):
        error = refused(scene.attacker.create, obj)
        assert error.status == 403, obj["kind"]
        assert "or its pod template" in error.message
    assert scene.admin.list(POD, namespace=scene.namespace, label_selector="cleoai.io/backup") == []


def test_labelling_an_existing_pod_as_the_runner_is_refused(scene: Scene) -> None:
    scene.attacker.create(pod("innocent", scene.namespace, {"app": "mine"}))
    try:
        error = refused(
            scene.attacker.patch_merge,
            POD,
            "innocent",
            {"metadata": {"labels": RUNNER_LABELS}},
            namespace=scene.namespace,
        )
        assert error.status == 403
        assert "may not add" in error.message
        live = scene.admin.get(POD, "innocent", namespace=scene.namespace)
        assert live is not None
        assert live["metadata"]["labels"] == {"app": "mine"}
        # The tenant's own pods stay theirs: other labels are fine.
        scene.attacker.patch_merge(
            POD, "innocent", {"metadata": {"labels": {"tier": "x"}}}, namespace=scene.namespace
        )
    finally:
        scene.attacker.delete(POD, "innocent", namespace=scene.namespace)


def test_objects_carrying_the_operators_label_cannot_be_created(scene: Scene) -> None:
    for kind, extra in (("Secret", {"data": {}}), ("ConfigMap", {"data": {"a": "b"}})):
        error = refused(
            scene.attacker.create,
            {
                "apiVersion": "v1",
                "kind": kind,
                "metadata": {
                    "name": "cleo-forged",
                    "namespace": scene.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "cleo-operator"},
                },
                **extra,
            },
        )
        assert error.status == 403
        assert f"may not create {kind.lower()}s" in error.message
    assert scene.admin.get(SECRET, "cleo-forged", namespace=scene.namespace) is None


def test_a_keyring_secret_cannot_be_planted_even_without_the_operators_labels(
    scene: Scene,
) -> None:
    """A bare `cleo-keyring` made by a tenant admin (before the operator's first reconcile,
    or after deleting it) would be taken for the tenant's keys: refused by name."""
    before = scene.admin.get(SECRET, "cleo-keyring", namespace=scene.namespace)
    assert before is not None
    error = refused(
        scene.attacker.create,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cleo-keyring", "namespace": scene.namespace},
            "data": {"keyring.json": "e30="},
        },
    )
    assert error.status == 403
    assert "reserved for the cleo-operator" in error.message
    after = scene.admin.get(SECRET, "cleo-keyring", namespace=scene.namespace)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_the_runners_names_cannot_be_squatted_before_the_operator_makes_them(
    scene: Scene,
) -> None:
    """A CronJob at `cleo-backup-<name>` made before the operator's, without its labels:
    the operator's server-side apply would take it over but keep the squatter's containers
    (another field manager's), and the Job controller would run them as the runner."""
    before = scene.snapshot()
    template = {
        "metadata": {"labels": {"app": "mine"}},
        "spec": {**pod("x", scene.namespace, {})["spec"], "restartPolicy": "Never"},
    }
    squatted = "cleo-backup-weekly"  # the runner's name for a CleoBackup `weekly`
    for obj in (
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": squatted, "namespace": scene.namespace},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": squatted, "namespace": scene.namespace},
            "spec": {"template": template},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": squatted, "namespace": scene.namespace},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "cleo-allow-everything", "namespace": scene.namespace},
            "spec": {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"generateName": "cleoai-", "namespace": scene.namespace},
        },
    ):
        error = refused(scene.attacker.create, obj)
        assert error.status == 403, obj
        # The tenant admin's RBAC has no ServiceAccounts or NetworkPolicies: refused there.
        if obj["kind"] in ("CronJob", "Job", "ConfigMap"):
            assert "reserved for the cleo-operator" in error.message, error.message
            assert ATTACKER in error.message
        # A cluster admin (RBAC allows everything) is refused too: by the policy.
        error = refused(scene.admin.create, obj)
        assert "reserved for the cleo-operator" in error.message, error.message
    for kind, name in (("CronJob", squatted), ("Job", squatted)):
        assert scene.admin.get(KINDS[("batch/v1", kind)], name, namespace=scene.namespace) is None
    assert scene.admin.get(SERVICE_ACCOUNT, squatted, namespace=scene.namespace) is None
    assert scene.snapshot() == before
    # Names outside the reserved ones stay the tenant's.
    mine = scene.attacker.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cleopatra", "namespace": scene.namespace},
        }
    )
    scene.attacker.delete(CONFIG_MAP, mine["metadata"]["name"], namespace=scene.namespace)


def test_no_token_secret_of_the_backup_runners_service_account_can_be_made(scene: Scene) -> None:
    """The token controller fills a Secret of type service-account-token with the named
    account's token: a tenant admin (who reads every Secret) would hold the runner's token,
    which writes its CleoBackup's status (a forged verified backup). Found in review."""

    def token_secret(name: str, account: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": scene.namespace,
                "annotations": {"kubernetes.io/service-account.name": account},
            },
            "type": "kubernetes.io/service-account-token",
        }

    error = refused(
        scene.attacker.create, token_secret("steal-runner-token", "cleo-backup-nightly")
    )
    assert error.status == 403
    assert MESSAGE in error.message
    assert "holds the token of, a backup runner's ServiceAccount" in error.message
    assert scene.admin.get(SECRET, "steal-runner-token", namespace=scene.namespace) is None
    # A token Secret of an account of the tenant's own is the tenant's business.
    own = scene.attacker.create(token_secret("own-token", "default"))
    assert own["metadata"]["name"] == "own-token"
    scene.admin.delete(SECRET, "own-token", namespace=scene.namespace)


def test_a_pod_cannot_run_as_the_backup_runners_service_account(scene: Scene) -> None:
    """The runner's ServiceAccount token may write its CleoBackup's status: a pod of the
    tenant admin's running as it could report a forged backup."""
    spec = {**pod("x", scene.namespace, {})["spec"], "serviceAccountName": "cleo-backup-nightly"}
    bare = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "steal-token", "namespace": scene.namespace},
        "spec": spec,
    }
    legacy = {
        **bare,
        "metadata": {"name": "steal-token2", "namespace": scene.namespace},
        "spec": {**pod("x", scene.namespace, {})["spec"], "serviceAccount": "cleo-backup-nightly"},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "steal-deploy", "namespace": scene.namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "steal"}},
            "template": {"metadata": {"labels": {"app": "steal"}}, "spec": spec},
        },
    }
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "steal-cron", "namespace": scene.namespace},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {
                "spec": {"template": {"spec": {**spec, "restartPolicy": "Never"}}},
            },
        },
    }
    for obj in (bare, legacy, deployment, cron):
        error = refused(scene.attacker.create, obj)
        assert error.status == 403, obj["kind"]
        assert "backup runner's ServiceAccount" in error.message, error.message
    assert scene.admin.get(POD, "steal-token", namespace=scene.namespace) is None
    assert scene.admin.get(POD, "steal-token2", namespace=scene.namespace) is None
    assert scene.admin.get(DEPLOYMENT, "steal-deploy", namespace=scene.namespace) is None
    # Changing an own Deployment's template to the runner's account is refused as well.
    scene.attacker.create(
        {
            **deployment,
            "spec": {
                **deployment["spec"],
                "template": {
                    "metadata": {"labels": {"app": "steal"}},
                    "spec": pod("x", scene.namespace, {})["spec"],
                },
            },
        }
    )
    try:
        error = refused(
            scene.attacker.patch_merge,
            DEPLOYMENT,
            "steal-deploy",
            {"spec": {"template": {"spec": {"serviceAccountName": "cleo-backup-nightly"}}}},
            namespace=scene.namespace,
        )
        assert "backup runner's ServiceAccount" in error.message
    finally:
        scene.attacker.delete(DEPLOYMENT, "steal-deploy", namespace=scene.namespace)


def test_a_pod_posing_as_the_runners_by_its_job_name_label_is_admitted(scene: Scene) -> None:
    """The Job controller's `batch.kubernetes.io/job-name` label is nobody's to protect: a
    tenant admin's pod may carry it (the backup reconciler must not trust it, see
    tests/integration/test_backup_cluster.py::test_a_pod_posing_as_the_runner_is_not_recorded)."""
    forged = pod(
        "poser", scene.namespace, {"batch.kubernetes.io/job-name": "cleo-backup-nightly-1"}
    )
    scene.attacker.create(forged)
    scene.attacker.delete(POD, "poser", namespace=scene.namespace)


# -- what must keep working -------------------------------------------------------------------


def test_the_operator_repairs_drift_with_the_policy_installed(scene: Scene) -> None:
    """The operator (and only it) may still write: it undoes a change made behind its back."""
    config_maps = scene.admin.list(
        CONFIG_MAP,
        namespace=scene.namespace,
        label_selector="app.kubernetes.io/managed-by=cleo-operator",
    )
    name = config_maps[0]["metadata"]["name"]
    original = copy.deepcopy(config_maps[0]["data"])
    # Drift made with the operator's own identity (nobody else can write it any more).
    scene.operator.patch_merge(
        CONFIG_MAP, name, {"data": {"CLEO_MEMORY_BACKEND": "drifted"}}, namespace=scene.namespace
    )
    scene.operator.delete(
        NETWORK_POLICY,
        "cleo-default-deny",
        namespace=scene.namespace,
    )

    result = scene.reconciler.reconcile(scene.tenant)

    assert result.ready
    live = scene.admin.get(CONFIG_MAP, name, namespace=scene.namespace)
    assert live is not None
    assert live["data"] == original
    assert (
        scene.admin.get(
            NETWORK_POLICY,
            "cleo-default-deny",
            namespace=scene.namespace,
        )
        is not None
    )


def test_the_job_controller_still_creates_the_runners_pods(scene: Scene) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "cleo-backup-manual",
            "namespace": scene.namespace,
            "labels": {**RUNNER_LABELS, "app.kubernetes.io/managed-by": "cleo-operator"},
        },
        "spec": {
            "template": {
                "metadata": {"labels": RUNNER_LABELS},
                "spec": {**pod("x", scene.namespace, {})["spec"], "restartPolicy": "Never"},
            }
        },
    }
    scene.operator.create(job)
    pods = wait_for(
        lambda: scene.admin.list(
            POD, namespace=scene.namespace, label_selector="job-name=cleo-backup-manual"
        ),
        timeout=60,
        what="the Job controller to create the runner pod",
    )
    # The tenant admin may not get into it (exec is CONNECT, refused before any kubelet).
    exec_is_refused(scene, pods[0]["metadata"]["name"])


def exec_is_refused(scene: Scene, name: str) -> None:
    """The tenant admin's exec into pod `name` is refused by the policy."""
    error = refused(
        scene.attacker.request,
        "POST",
        f"/api/v1/namespaces/{scene.namespace}/pods/{name}/exec?command=sh&stdout=true",
    )
    assert error.status == 403
    assert "the operator's pod" in error.message


@pytest.mark.parametrize("name", ["cleo-migrate-0123456789-abcde", "cleo-pooler-5d9c-x2x"])
def test_exec_into_a_migration_pod_is_refused(scene: Scene, name: str) -> None:
    # A migration pod holds the tenant's database credentials and writes the revision the
    # operator trusts; a pooler pod holds every client's traffic. Tenants cannot make pods
    # named cleo-*, so the name says the pod is the operator's.
    scene.operator.create(pod(name, scene.namespace, {}))
    # (exec is what the tenant admin's role holds; attach and port-forward are refused by
    # the same rule, the CONNECT operation, for whoever else would hold them.)
    exec_is_refused(scene, name)


def test_a_platform_admin_may_exec_into_the_operators_pods(scene: Scene) -> None:
    # Whoever may update CleoTenants cluster-wide (the platform team) is not locked out of
    # its own migration and pooler pods; the tenant admin still is.
    name = "cleo-migrate-9876543210-abcde"
    scene.operator.create(pod(name, scene.namespace, {}))
    platform = platform_admin_client(scene.cluster, scene.admin)
    path = f"/api/v1/namespaces/{scene.namespace}/pods/{name}/exec?command=sh&stdout=true"
    error = refused(platform.request, "POST", path)
    # Admitted: what answers is the API server's own (the pod runs on no node here), never
    # the policy.
    assert MESSAGE not in error.message, error.message
    assert error.status != 403, error.message
    exec_is_refused(scene, name)


def test_a_cronjob_whose_job_template_wears_the_operators_labels_is_refused(
    scene: Scene,
) -> None:
    # The CronJob controller (exempt: it acts for whoever made the CronJob) would make Jobs
    # wearing the labels of jobTemplate.metadata, the operator's migration Job's included.
    template = {"spec": {**pod("x", scene.namespace, {})["spec"], "restartPolicy": "Never"}}
    labels = {"app.kubernetes.io/managed-by": "cleo-operator", "cleoai.io/migration": "x"}
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "labelled-jobs", "namespace": scene.namespace},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {"metadata": {"labels": labels}, "spec": {"template": template}},
        },
    }
    error = refused(scene.attacker.create, cron)
    assert error.status == 403
    assert MESSAGE in error.message
    # Nor added to one made clean.
    clean = copy.deepcopy(cron)
    clean["spec"]["jobTemplate"]["metadata"] = {"labels": {"app": "mine"}}
    scene.attacker.create(clean)
    try:
        error = refused(
            scene.attacker.patch_merge,
            CRON_JOB,
            "labelled-jobs",
            {"spec": {"jobTemplate": {"metadata": {"labels": labels}}}},
            namespace=scene.namespace,
        )
        assert error.status == 403
        assert "may not add" in error.message
    finally:
        scene.attacker.delete(CRON_JOB, "labelled-jobs", namespace=scene.namespace)
    # A PodTemplate object's template too (refused to anyone but the operator).
    podtemplate = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "labelled-template", "namespace": scene.namespace},
        "template": {"metadata": {"labels": labels}, "spec": pod("x", scene.namespace, {})["spec"]},
    }
    error = refused(
        scene.admin.request,
        "POST",
        f"/api/v1/namespaces/{scene.namespace}/podtemplates",
        body=podtemplate,
    )
    assert error.status == 403
    assert MESSAGE in error.message


def test_garbage_collection_still_deletes_protected_dependents(scene: Scene) -> None:
    owner = scene.operator.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gc-owner", "namespace": scene.namespace},
        }
    )
    scene.operator.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "gc-dependent",
                "namespace": scene.namespace,
                "labels": {"app.kubernetes.io/managed-by": "cleo-operator"},
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "gc-owner",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
        }
    )
    scene.operator.delete(CONFIG_MAP, "gc-owner", namespace=scene.namespace)
    wait_for(
        lambda: scene.admin.get(SECRET, "gc-dependent", namespace=scene.namespace) is None,
        timeout=60,
        what="the garbage collector to delete the dependent",
    )


def test_namespace_deletion_still_empties_a_protected_namespace(
    kube: KubeClient, scene: Scene
) -> None:
    """Runs last in this module: it deletes a tenant namespace full of protected objects."""
    namespace = new_name("twa-gone")
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"cleoai.io/tenant": "gone"}},
        }
    )
    scene.operator.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "cleo-keyring",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "cleo-operator"},
            },
        }
    )
    kube.delete(NAMESPACE, namespace)
    wait_for(
        lambda: kube.get(NAMESPACE, namespace) is None,
        timeout=90,
        interval=1,
        what="the namespace controller to delete the namespace and its protected Secret",
    )


def test_a_service_cannot_take_over_an_address_with_external_ips(scene: Scene) -> None:
    # CVE-2020-8554: a Service's externalIPs send that address's traffic, from every pod of
    # the cluster, to the Service's endpoints: a database site's address would hand the
    # tenant other tenants' pooler logins and the operator's own.
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "site-twin", "namespace": scene.namespace},
        "spec": {
            "selector": {"app": "mine"},
            "ports": [{"port": 5432, "protocol": "TCP"}],
            "externalIPs": ["10.20.30.40"],
        },
    }
    error = refused(scene.attacker.create, service)
    assert error.status == 403
    assert "spec.externalIPs" in error.message
    # Nor added to one made without them; one without them is the tenant's to make.
    plain = copy.deepcopy(service)
    del plain["spec"]["externalIPs"]
    scene.attacker.create(plain)
    try:
        error = refused(
            scene.attacker.patch_merge,
            SERVICE,
            "site-twin",
            {"spec": {"externalIPs": ["10.20.30.40"]}},
            namespace=scene.namespace,
        )
        assert error.status == 403
        assert "spec.externalIPs" in error.message
        # A platform admin (who may update CleoTenants) may still set them.
        platform = platform_admin_client(scene.cluster, scene.admin)
        platform.patch_merge(
            SERVICE,
            "site-twin",
            {"spec": {"externalIPs": ["10.20.30.40"]}},
            namespace=scene.namespace,
        )
    finally:
        scene.admin.delete(SERVICE, "site-twin", namespace=scene.namespace)


LB_ADDRESS_ANNOTATIONS = (
    "metallb.universe.tf/loadBalancerIPs",
    "metallb.io/loadBalancerIPs",
    "io.cilium/lb-ipam-ips",
    "lbipam.cilium.io/ips",
    "kube-vip.io/loadbalancerIPs",
)


def free_cluster_ip(scene: Scene) -> str:
    """An address of the cluster's Service range that no Service holds (as a site's
    Service's would be once it is deleted)."""
    first = scene.admin.get(SERVICE, "kubernetes", namespace="default")
    assert first is not None
    prefix = first["spec"]["clusterIP"].rsplit(".", 1)[0]
    taken = {svc["spec"].get("clusterIP") for svc in scene.admin.list(SERVICE)}
    return next(f"{prefix}.{n}" for n in range(250, 100, -1) if f"{prefix}.{n}" not in taken)


def test_a_service_cannot_choose_its_address(scene: Scene) -> None:
    """Beyond externalIPs: a LoadBalancer address the tenant names (spec.loadBalancerIP,
    MetalLB's, Cilium's, kube-vip's annotations) or a ClusterIP it picks could be a database
    site's (a freed ClusterIP: a site's Service deleted and made again)."""

    def service(name: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": scene.namespace},
            "spec": {"selector": {"app": "mine"}, "ports": [{"port": 5432}], **spec},
        }

    lb = service("lb-twin", type="LoadBalancer", loadBalancerIP="10.20.30.40")
    error = refused(scene.attacker.create, lb)
    assert error.status == 403
    assert "load-balancer address" in error.message
    for key in LB_ADDRESS_ANNOTATIONS:
        annotated = service("lb-twin", type="LoadBalancer")
        annotated["metadata"]["annotations"] = {key: "10.20.30.40"}
        error = refused(scene.attacker.create, annotated)
        assert error.status == 403, key
        assert "load-balancer address" in error.message, key
    address = free_cluster_ip(scene)
    for spec in ({"clusterIP": address}, {"clusterIP": address, "clusterIPs": [address]}):
        error = refused(scene.attacker.create, service("ip-twin", **spec))
        assert error.status == 403, spec
        assert "ClusterIP" in error.message
    # The policy tells a chosen ClusterIP from an allocated one by the request's fields
    # (managedFields): a request that brings its own managedFields still has it counted.
    forged = service("ip-twin", clusterIP=address)
    forged["metadata"]["managedFields"] = [
        {
            "manager": "kubectl",
            "operation": "Update",
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:selector": {}}},
        }
    ]
    error = refused(scene.attacker.create, forged)
    assert error.status == 403
    assert "ClusterIP" in error.message
    applied = service("ip-twin", clusterIP=address)
    error = refused(scene.attacker.apply, applied)
    assert error.status == 403
    assert "ClusterIP" in error.message

    # What the cluster picks is the tenant's: a LoadBalancer, a ClusterIP and a headless
    # Service are made and changed as before.
    created = []
    try:
        for made in (
            service("lb-plain", type="LoadBalancer"),
            service("ip-plain"),
            service("headless", clusterIP="None"),
        ):
            scene.attacker.create(made)
            created.append(made["metadata"]["name"])
            scene.attacker.patch_merge(
                SERVICE,
                made["metadata"]["name"],
                {"metadata": {"labels": {"changed": "yes"}}},
                namespace=scene.namespace,
            )
        # Nor added later.
        error = refused(
            scene.attacker.patch_merge,
            SERVICE,
            "lb-plain",
            {"spec": {"loadBalancerIP": "10.20.30.40"}},
            namespace=scene.namespace,
        )
        assert "load-balancer address" in error.message
        error = refused(
            scene.attacker.patch_merge,
            SERVICE,
            "lb-plain",
            {"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "10.20.30.40"}}},
            namespace=scene.namespace,
        )
        assert "load-balancer address" in error.message
        # A platform admin (who may update CleoTenants) may still choose.
        platform = platform_admin_client(scene.cluster, scene.admin)
        platform.patch_merge(
            SERVICE,
            "lb-plain",
            {"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "10.20.30.40"}}},
            namespace=scene.namespace,
        )
        # Once the platform set it, the tenant's other changes to the Service still pass.
        scene.attacker.patch_merge(
            SERVICE,
            "lb-plain",
            {"metadata": {"labels": {"changed": "again"}}},
            namespace=scene.namespace,
        )
    finally:
        for name in created:
            scene.admin.delete(SERVICE, name, namespace=scene.namespace)


def test_a_services_status_is_written_only_by_the_load_balancer_controllers(
    scene: Scene,
) -> None:
    """A custom role granting services/status in the namespace would let its holder give a
    LoadBalancer a site's address as its ingress; the controllers, who may write every
    Service's status, still can."""
    name = "lb-status"
    scene.attacker.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": scene.namespace},
            "spec": {"type": "LoadBalancer", "selector": {"app": "mine"}, "ports": [{"port": 80}]},
        }
    )
    role = f"{name}-writer"
    ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "10.20.30.40"}]}}}

    def attacker_writes() -> KubeError | None:
        try:
            scene.attacker.patch_merge(
                SERVICE, name, ingress, namespace=scene.namespace, subresource="status"
            )
        except KubeError as exc:
            return exc
        return None

    try:
        scene.admin.create(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": role, "namespace": scene.namespace},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["services/status"],
                        "verbs": ["get", "update", "patch"],
                    }
                ],
            }
        )
        scene.admin.create(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": role, "namespace": scene.namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "User", "name": ATTACKER}],
            }
        )
        # RBAC takes a moment: the refusal must come from the policy, not from RBAC.
        error = wait_for(
            lambda: (e := attacker_writes()) is not None and MESSAGE in e.message and e,
            timeout=30,
            interval=0.5,
            what="the attacker's status write to be refused by the policy",
        )
        assert isinstance(error, KubeError)
        assert error.status == 403
        assert "may not write the status" in error.message
        current = scene.admin.get(SERVICE, name, namespace=scene.namespace)
        assert current is not None
        assert not (current.get("status") or {}).get("loadBalancer", {}).get("ingress")

        controller = load_balancer_controller_client(scene.cluster, scene.admin)
        wait_for(
            lambda: controller.patch_merge(
                SERVICE, name, ingress, namespace=scene.namespace, subresource="status"
            ),
            timeout=30,
            interval=0.5,
            what="the load-balancer controller to write the Service's status",
        )
    finally:
        scene.admin.delete(SERVICE, name, namespace=scene.namespace)
        for kind in (ROLE_BINDING, ROLE):
            if scene.admin.get(kind, role, namespace=scene.namespace) is not None:
                scene.admin.delete(kind, role, namespace=scene.namespace)

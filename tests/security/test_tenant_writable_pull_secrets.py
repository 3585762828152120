"""A tenant admin against the runner's registry credentials, with the admission policy on.

The operator copies its registry Secrets into tenant namespaces as ``cleo-pull-<name>``
(reconcile/pull_secrets.py), and the runner pods name the copies. A tenant admin who could
write a copy could make the runner pull with credentials of their choosing (a registry or
mirror they control, in front of the image's name), or plant one before the operator makes
it. Here the shipped ``cleo-tenant-protection`` policy is installed (for the operator
identity the tests run as), the backup reconciler runs as that operator, and a real tenant
admin credential (see tenant_writable_support) tries both: refused, and the copy stays the
operator's. What the admin can still do, read the copy, is the residual risk docs/security.md
names.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import NAMESPACE, SECRET, TENANT
from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings
from cleo_operator.render.backup import BackupPodSettings
from e2e.cluster import LocalCluster
from tests.harness.specs import backup_manifest, tenant_manifest
from tests.integration.backup_cluster_support import API_SERVER, RUNNER_IMAGE
from tests.security.tenant_writable_support import (
    ATTACKER,
    MESSAGE,
    attacker_client,
    bind_tenant_admin,
    create_tenant_namespace,
    install_policy,
    new_name,
    operator_client,
    refused,
    remove_policy,
)

pytestmark = [
    pytest.mark.security,
    pytest.mark.cluster,
    pytest.mark.usefixtures("without_session_operator"),
]

COPY = "cleo-pull-regcred"


def docker_config(registry: str) -> str:
    auth = base64.b64encode(b"robot:token-of-" + registry.encode()).decode()
    return base64.b64encode(json.dumps({"auths": {registry: {"auth": auth}}}).encode()).decode()


OPERATORS = docker_config("registry.team.example")
ATTACKERS = docker_config("registry.attacker.example")


def registry_secret(name: str, namespace: str, data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": namespace},
        "data": {".dockerconfigjson": data},
    }


@dataclass
class Scene:
    namespace: str
    admin: KubeClient
    attacker: KubeClient
    reconciler: BackupReconciler


@pytest.fixture(scope="module")
def scene(cluster: LocalCluster, kube: KubeClient, crds_installed: None) -> Iterator[Scene]:
    del crds_installed
    operator = operator_client(cluster)
    operator_namespace = new_name("twp-op")
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": operator_namespace}})
    kube.create(registry_secret("regcred", operator_namespace, OPERATORS))
    tenant = new_name("twp")
    namespace = f"cleo-{tenant}"
    probe = new_name("twp-probe")
    create_tenant_namespace(kube, probe, "probe")
    create_tenant_namespace(kube, namespace, tenant)
    install_policy(cluster, kube, probe)
    try:
        kube.create(
            tenant_manifest(
                tenant,
                {
                    "paused": True,
                    "namespace": namespace,
                    "database": {"enabled": True, "site": "main"},
                },
            )
        )
        bind_tenant_admin(operator, tenant=tenant, namespace=namespace, user=ATTACKER)
        reconciler = BackupReconciler(
            operator,
            settings=BackupSettings(
                pod=BackupPodSettings(image=RUNNER_IMAGE, api_server_cidrs=API_SERVER),
                pull_secret_sources=("regcred",),
            ),
            operator_namespace=operator_namespace,
        )
        kube.create(
            backup_manifest(
                "nightly",
                namespace,
                {
                    "tenant": tenant,
                    "schedule": "0 3 * * *",
                    "destination": {"type": "pvc", "pvc": {"claimName": "backups"}},
                },
            )
        )
        yield Scene(
            namespace=namespace,
            admin=kube,
            attacker=attacker_client(cluster, kube),
            reconciler=reconciler,
        )
    finally:
        kube.delete(TENANT, tenant)
        remove_policy(cluster, kube, probe)
        for name in (namespace, probe, operator_namespace):
            kube.delete(NAMESPACE, name)


def test_a_tenant_admin_cannot_plant_a_secret_at_the_copys_name_before_it_exists(
    scene: Scene,
) -> None:
    assert scene.admin.get(SECRET, COPY, namespace=scene.namespace) is None
    for planted in (
        registry_secret(COPY, scene.namespace, ATTACKERS),
        {  # with the operator's labels, as if it were the copy
            **registry_secret(COPY, scene.namespace, ATTACKERS),
            "metadata": {
                "name": COPY,
                "namespace": scene.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "cleo-operator",
                    "app.kubernetes.io/component": "image-pull",
                },
            },
        },
    ):
        error = refused(scene.attacker.create, planted)
        assert error.status == 403
        assert MESSAGE in error.message
        assert ATTACKER in error.message
    assert scene.admin.get(SECRET, COPY, namespace=scene.namespace) is None

    # The operator then makes the copy from its own Secret.
    scene.reconciler.reconcile(scene.namespace, "nightly")
    copy = scene.admin.get(SECRET, COPY, namespace=scene.namespace)
    assert copy is not None
    assert copy["data"] == {".dockerconfigjson": OPERATORS}


def test_a_tenant_admin_cannot_change_or_delete_the_copy_the_runner_pulls_with(
    scene: Scene,
) -> None:
    scene.reconciler.reconcile(scene.namespace, "nightly")
    before = scene.admin.get(SECRET, COPY, namespace=scene.namespace)
    assert before is not None
    # RBAC lets the admin read it: the residual risk of docs/security.md.
    read = scene.attacker.get(SECRET, COPY, namespace=scene.namespace)
    assert read is not None
    assert read["data"] == {".dockerconfigjson": OPERATORS}

    attempts = [
        (
            scene.attacker.patch_merge,
            (SECRET, COPY, {"data": {".dockerconfigjson": ATTACKERS}}),
            "may not change secrets",
        ),
        (  # shed the operator's label first, to make it a Secret of the tenant's
            scene.attacker.patch_merge,
            (SECRET, COPY, {"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}}),
            "may not change secrets",
        ),
        (scene.attacker.delete, (SECRET, COPY), "may not delete secrets"),
    ]
    for call, args, words in attempts:
        error = refused(call, *args, namespace=scene.namespace)
        assert error.status == 403
        assert words in error.message, error.message

    after = scene.admin.get(SECRET, COPY, namespace=scene.namespace)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["data"] == {".dockerconfigjson": OPERATORS}
    # And the operator's next reconcile, under the policy, has nothing to put right.
    result = scene.reconciler.reconcile(scene.namespace, "nightly")
    assert (result.applied, result.deleted) == ([], [])

"""The runner's registry credentials on a real API server: the operator's pull secrets copied
into the tenant namespace, kept in sync level by level, and refused when they are not
registry credentials.

Issue 13: the chart's ``backup.imagePullSecrets`` named Secrets of the operator's namespace
on pods of tenant namespaces, where they do not exist (ImagePullBackOff). The attacks of a
tenant admin on the copies, with the admission policy installed, are in
tests/security/test_tenant_writable_pull_secrets.py.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import BACKUP, CRON_JOB, NAMESPACE, SECRET, TENANT
from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings
from cleo_operator.render.backup import BackupPodSettings
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.operator_fixtures import start_operator
from tests.harness.specs import backup_manifest
from tests.integration.backup_cluster_support import API_SERVER, RUNNER_IMAGE
from tests.integration.test_backup_cluster import (
    PVC_DESTINATION,
    make_tenant,
    provide_claim,
    provide_secrets,
    writes_in,
)

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("without_session_operator")]

SCHEDULED = {"schedule": "0 3 * * *", "destination": PVC_DESTINATION}
NOT_REGISTRY_VALUE = "hunter2-not-a-registry-credential"


def docker_config(registry: str, token: str) -> str:
    auths = {"auths": {registry: {"auth": base64.b64encode(f"robot:{token}".encode()).decode()}}}
    return base64.b64encode(json.dumps(auths).encode()).decode()


def registry_secret(name: str, namespace: str, data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": "platform"}},
        "data": {".dockerconfigjson": data},
    }


@pytest.fixture
def operator_namespace(kube: KubeClient) -> Iterator[str]:
    """The operator's namespace, with two registry Secrets and one that is not."""
    namespace = f"pulls-op-{secrets.token_hex(4)}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kube.create(registry_secret("regcred", namespace, docker_config("registry.example", "one")))
    kube.create(registry_secret("mirror-pull", namespace, docker_config("mirror.example", "m")))
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "not-registry", "namespace": namespace},
            "data": {"password": base64.b64encode(NOT_REGISTRY_VALUE.encode()).decode()},
        }
    )
    yield namespace
    kube.delete(NAMESPACE, namespace)


@pytest.fixture
def tenant_namespace(kube: KubeClient, crds_installed: None) -> Iterator[tuple[str, str]]:
    del crds_installed
    tenant = f"pull-{secrets.token_hex(4)}"
    namespace = make_tenant(kube, tenant)
    provide_secrets(kube, namespace)
    provide_claim(kube, namespace)
    yield tenant, namespace
    kube.delete(TENANT, tenant)
    kube.delete(NAMESPACE, namespace)


def reconciler(kube: KubeClient, operator_namespace: str, *sources: str) -> BackupReconciler:
    return BackupReconciler(
        kube,
        settings=BackupSettings(
            pod=BackupPodSettings(image=RUNNER_IMAGE, api_server_cidrs=API_SERVER),
            pull_secret_sources=sources,
            retry_seconds=1.0,
        ),
        operator_namespace=operator_namespace,
    )


def pod_pull_secrets(kube: KubeClient, namespace: str, backup: str) -> list[str]:
    cron = kube.get(CRON_JOB, f"cleo-backup-{backup}", namespace=namespace)
    assert cron is not None
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return [ref["name"] for ref in pod.get("imagePullSecrets") or []]


def secret(kube: KubeClient, name: str, namespace: str) -> dict[str, Any]:
    found = kube.get(SECRET, name, namespace=namespace)
    assert found is not None, f"Secret {namespace}/{name} does not exist"
    return found


def condition_of(kube: KubeClient, namespace: str, backup: str, kind: str) -> dict[str, Any]:
    obj = kube.get(BACKUP, backup, namespace=namespace)
    assert obj is not None
    (condition,) = [c for c in obj["status"]["conditions"] if c["type"] == kind]
    return dict(condition)


def ready(kube: KubeClient, namespace: str, backup: str) -> dict[str, Any]:
    return condition_of(kube, namespace, backup, "Ready")


def pulls(kube: KubeClient, namespace: str, backup: str) -> dict[str, Any]:
    return condition_of(kube, namespace, backup, "PullSecretsCopied")


def test_the_runner_pulls_with_copies_that_follow_the_operators_secrets(
    cluster: LocalCluster,
    kube: KubeClient,
    operator_namespace: str,
    tenant_namespace: tuple[str, str],
) -> None:
    tenant, namespace = tenant_namespace
    owner = kube.get(TENANT, tenant)
    assert owner is not None
    kube.create(backup_manifest("nightly", namespace, {"tenant": tenant, **SCHEDULED}))
    both = reconciler(kube, operator_namespace, "regcred", "mirror-pull")
    result = both.reconcile(namespace, "nightly")

    copied = {ref["name"] for ref in result.applied if ref["kind"] == "Secret"}
    assert copied == {"cleo-pull-regcred", "cleo-pull-mirror-pull"}
    assert pod_pull_secrets(kube, namespace, "nightly") == [
        "cleo-pull-regcred",
        "cleo-pull-mirror-pull",
    ]
    for source in ("regcred", "mirror-pull"):
        copy = secret(kube, f"cleo-pull-{source}", namespace)
        assert copy["type"] == "kubernetes.io/dockerconfigjson"
        assert copy["data"] == secret(kube, source, operator_namespace)["data"]
        labels = copy["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "cleo-operator"
        assert "team" not in labels, "the source's labels are not copied"
        # One owner, the tenant, however many backups the namespace has.
        assert [(o["kind"], o["uid"]) for o in copy["metadata"]["ownerReferences"]] == [
            ("CleoTenant", owner["metadata"]["uid"])
        ]
    assert ready(kube, namespace, "nightly")["reason"] == "NoBackupYet"
    assert (
        pulls(kube, namespace, "nightly")["status"],
        pulls(kube, namespace, "nightly")["reason"],
    ) == ("True", "Copied")

    # Nothing changed: nothing written in the tenant namespace.
    offset = cluster.audit_offset()
    again = both.reconcile(namespace, "nightly")
    assert (again.applied, again.deleted, again.status_written) == ([], [], False)
    assert writes_in(cluster, namespace, offset) == []

    # The source changes (a rotated robot token): its copy follows, and only its copy.
    rotated = docker_config("registry.example", "two")
    kube.patch_merge(
        SECRET, "regcred", {"data": {".dockerconfigjson": rotated}}, namespace=operator_namespace
    )
    after_rotation = both.reconcile(namespace, "nightly")
    assert [ref["name"] for ref in after_rotation.applied] == ["cleo-pull-regcred"]
    assert secret(kube, "cleo-pull-regcred", namespace)["data"] == {".dockerconfigjson": rotated}

    # A second backup of the namespace shares the copies and writes nothing new to them.
    kube.create(backup_manifest("weekly", namespace, {"tenant": tenant, **SCHEDULED}))
    shared = both.reconcile(namespace, "weekly")
    assert [ref["name"] for ref in shared.applied if ref["kind"] == "Secret"] == []
    owners = secret(kube, "cleo-pull-mirror-pull", namespace)["metadata"]["ownerReferences"]
    assert [o["uid"] for o in owners] == [owner["metadata"]["uid"]]

    # A name removed from the setting: its copy goes, and the pods stop naming it.
    mirror_only = reconciler(kube, operator_namespace, "mirror-pull")
    removed = mirror_only.reconcile(namespace, "nightly")
    assert [ref["name"] for ref in removed.deleted] == ["cleo-pull-regcred"]
    assert kube.get(SECRET, "cleo-pull-regcred", namespace=namespace) is None
    assert pod_pull_secrets(kube, namespace, "nightly") == ["cleo-pull-mirror-pull"]


@pytest.mark.security
def test_the_copies_leave_with_the_tenant_deleted_with_retain(
    kube: KubeClient, operator_namespace: str, tenant_namespace: tuple[str, str]
) -> None:
    """Retain keeps the namespace and the tenant's data for its former admins, never the
    platform's registry credential: the copies go whatever the backups still in it."""
    tenant, namespace = tenant_namespace
    kube.create(backup_manifest("nightly", namespace, {"tenant": tenant, **SCHEDULED}))
    service = reconciler(kube, operator_namespace, "regcred")
    service.reconcile(namespace, "nightly")
    assert kube.get(SECRET, "cleo-pull-regcred", namespace=namespace) is not None
    kube.delete(TENANT, tenant)  # deletionPolicy Retain (the default); no operator runs
    wait_for(lambda: kube.get(TENANT, tenant) is None, timeout=30, interval=0.2, what="the tenant")
    # The backup's next reconcile finds no tenant and prunes (the garbage collector takes
    # copies owned by the tenant too, whichever comes first).
    service.reconcile(namespace, "nightly")
    assert kube.get(SECRET, "cleo-pull-regcred", namespace=namespace) is None
    assert ready(kube, namespace, "nightly")["reason"] == "TenantNotFound"
    assert pulls(kube, namespace, "nightly")["status"] == "Unknown"
    # A CleoBackup whose tenant is gone gets no runner rendered (the one it had is left as
    # it was, naming a copy that no longer exists: the kubelet pulls without it).
    assert pod_pull_secrets(kube, namespace, "nightly") == ["cleo-pull-regcred"]
    assert kube.get(BACKUP, "nightly", namespace=namespace) is not None


@pytest.mark.security
def test_a_source_missing_or_not_registry_credentials_is_a_condition_and_never_copied(
    kube: KubeClient, operator_namespace: str, tenant_namespace: tuple[str, str]
) -> None:
    tenant, namespace = tenant_namespace
    kube.create(backup_manifest("nightly", namespace, {"tenant": tenant, **SCHEDULED}))
    reconciler(kube, operator_namespace, "regcred").reconcile(namespace, "nightly")
    assert kube.get(SECRET, "cleo-pull-regcred", namespace=namespace) is not None

    mixed = reconciler(kube, operator_namespace, "regcred", "absent", "not-registry")
    result = mixed.reconcile(namespace, "nightly")
    condition = pulls(kube, namespace, "nightly")
    assert (condition["status"], condition["reason"]) == ("False", "ImagePullSecretMissing")
    assert f"Secret {operator_namespace}/absent" in condition["message"]
    assert "create secret docker-registry" in condition["message"]
    # A condition of its own: it never holds the runner back (the kubelet pulls without).
    assert result.phase == "Scheduled"
    assert ready(kube, namespace, "nightly")["reason"] == "NoBackupYet"
    assert kube.get(SECRET, "cleo-pull-absent", namespace=namespace) is None
    assert kube.get(SECRET, "cleo-pull-not-registry", namespace=namespace) is None
    # The usable source is still copied, and the pods name every configured copy.
    assert kube.get(SECRET, "cleo-pull-regcred", namespace=namespace) is not None
    assert pod_pull_secrets(kube, namespace, "nightly") == [
        "cleo-pull-regcred",
        "cleo-pull-absent",
        "cleo-pull-not-registry",
    ]

    wrong_type = reconciler(kube, operator_namespace, "not-registry")
    wrong_type.reconcile(namespace, "nightly")
    condition = pulls(kube, namespace, "nightly")
    assert condition["reason"] == "ImagePullSecretInvalid"
    assert "is of type Opaque, not kubernetes.io/dockerconfigjson" in condition["message"]
    assert NOT_REGISTRY_VALUE not in json.dumps(kube.get(BACKUP, "nightly", namespace=namespace))
    assert kube.get(SECRET, "cleo-pull-not-registry", namespace=namespace) is None
    # The copy of a name no longer configured went with it.
    assert kube.get(SECRET, "cleo-pull-regcred", namespace=namespace) is None

    # A source deleted after it was copied: the credential leaves the tenant namespace too.
    only = reconciler(kube, operator_namespace, "mirror-pull")
    only.reconcile(namespace, "nightly")
    assert kube.get(SECRET, "cleo-pull-mirror-pull", namespace=namespace) is not None
    kube.delete(SECRET, "mirror-pull", namespace=operator_namespace)
    gone = only.reconcile(namespace, "nightly")
    assert [ref["name"] for ref in gone.deleted] == ["cleo-pull-mirror-pull"]
    assert pulls(kube, namespace, "nightly")["reason"] == "ImagePullSecretMissing"

    # Put back: the condition clears and the copy returns.
    kube.create(
        registry_secret("mirror-pull", operator_namespace, docker_config("mirror.example", "n"))
    )
    only.reconcile(namespace, "nightly")
    assert pulls(kube, namespace, "nightly")["reason"] == "Copied"
    assert kube.get(SECRET, "cleo-pull-mirror-pull", namespace=namespace) is not None


@pytest.mark.security
def test_a_secret_planted_at_a_copys_name_or_a_changed_copy_is_put_right(
    kube: KubeClient, operator_namespace: str, tenant_namespace: tuple[str, str]
) -> None:
    """Without the admission policy (which refuses both: see the security tests), the
    reconcile still never pulls with someone else's Secret."""
    tenant, namespace = tenant_namespace
    planted = docker_config("attacker.example", "mine")
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": "cleo-pull-regcred", "namespace": namespace},
            "data": {"note": planted},
        }
    )
    kube.create(backup_manifest("nightly", namespace, {"tenant": tenant, **SCHEDULED}))
    service = reconciler(kube, operator_namespace, "regcred")
    result = service.reconcile(namespace, "nightly")
    assert "cleo-pull-regcred" in [ref["name"] for ref in result.deleted]
    source = secret(kube, "regcred", operator_namespace)
    copy = secret(kube, "cleo-pull-regcred", namespace)
    assert (copy["type"], copy["data"]) == (source["type"], source["data"])

    kube.patch_merge(
        SECRET, "cleo-pull-regcred", {"data": {".dockerconfigjson": planted}}, namespace=namespace
    )
    repaired = service.reconcile(namespace, "nightly")
    assert [ref["name"] for ref in repaired.applied] == ["cleo-pull-regcred"]
    assert secret(kube, "cleo-pull-regcred", namespace)["data"] == source["data"]


def test_the_operator_refuses_to_start_while_a_named_source_is_missing(
    cluster: LocalCluster,
    crds_installed: None,
    operator_namespace: str,
    tmp_path: Path,
) -> None:
    """Upgraded with values of the old meaning (Secrets of the tenant namespaces), the
    operator would point every runner at copies that can never exist: it stops instead,
    with exit code 2 and the names, as for any other wrong setting."""
    del crds_installed
    proc = start_operator(
        cluster,
        tmp_path / "operator.log",
        extra_args=["--operator-namespace", operator_namespace],
        env={"CLEO_BACKUP_IMAGE_PULL_SECRETS": "regcred,tenant-regcred"},
        wait_ready=False,
    )
    try:
        code = proc.popen.wait(timeout=60)
    finally:
        proc.stop()
    log = proc.log_text()
    assert code == 2, log[-3000:]
    assert "cannot start" in log
    # Only the missing one is named (regcred exists in the operator's namespace).
    assert "(backup.imagePullSecrets) names tenant-regcred, which do not exist" in log
    assert f"operator's namespace {operator_namespace}" in log

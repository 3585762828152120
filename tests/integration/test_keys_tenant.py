"""Keys and sealed secrets inside the real tenant reconcile: `EncryptionPart` as a part of
`TenantReconciler`, on a real API server, exactly as the operator will run it.

The clock is injected: a rotation period of an hour passes in one step.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.api.tenant import EncryptionSpec, SealedSecret
from cleo_operator.crypto import seal
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import CONFIG_MAP, DEPLOYMENT, RESOURCE_QUOTA, SECRET, TENANT
from cleo_operator.reconcile.encryption import EncryptionPart
from cleo_operator.reconcile.keys import KeyringReconciler, OperatorKeys, ensure_operator_keys
from cleo_operator.reconcile.secrets import SecretsReconciler, apply_secrets
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.workload import CONFIG_CHECKSUM_ANNOTATION
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.specs import IMAGE, apply_tenant
from tests.integration.keys_harness import (
    SecretScanner,
    create_namespace,
    delete_namespace,
    resource_version,
    tenant_keyring,
)

# These tests run the reconcilers in processes of their own: no operator may race them.
pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("without_session_operator")]

T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def keys(kube: KubeClient, crds_installed: None) -> Iterator[OperatorKeys]:
    del crds_installed
    name = _unique("keys-part-")
    create_namespace(kube, name)
    yield ensure_operator_keys(kube, operator_namespace=name, kek_dir=None, now=T0)
    delete_namespace(kube, name)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reconciler(kube: KubeClient, keys: OperatorKeys, clock: Clock) -> TenantReconciler:
    return TenantReconciler(kube, parts=[EncryptionPart(kube, keys)], now=clock)


def sealed(keys: OperatorKeys, tenant: str, name: str, **values: str) -> dict[str, Any]:
    public = keys.sealing.load().public_key
    return {
        "name": name,
        "data": {
            key: seal(public, tenant=tenant, secret=name, key=key, plaintext=value.encode())
            for key, value in values.items()
        },
    }


@pytest.fixture
def tenant(cluster: LocalCluster, kube: KubeClient) -> Iterator[dict[str, str]]:
    names = {"name": _unique("enc"), "namespace": _unique("enc-ns-")}
    yield names
    cluster.kubectl("delete", "cleotenant", names["name"], "--wait=false", check=False)
    delete_namespace(kube, names["namespace"])


def checksum(kube: KubeClient, namespace: str) -> str:
    deployment = kube.get(DEPLOYMENT, "cleoai", namespace=namespace)
    assert deployment is not None
    return str(
        deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_CHECKSUM_ANNOTATION]
    )


def quota_counted(kube: KubeClient, namespace: str) -> bool:
    quota = kube.get(RESOURCE_QUOTA, "secrets", namespace=namespace) or {}
    return bool((quota.get("status") or {}).get("hard"))


def decoded(secret: dict[str, Any] | None) -> dict[str, bytes]:
    assert secret is not None
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def test_the_tenant_reconcile_keeps_keys_and_secrets_and_rolls_pods_on_rotation(
    *,
    cluster: LocalCluster,
    kube: KubeClient,
    keys: OperatorKeys,
    clock: Clock,
    reconciler: TenantReconciler,
    tenant: dict[str, str],
) -> None:
    name, namespace = tenant["name"], tenant["namespace"]
    spec: dict[str, Any] = {
        "namespace": namespace,
        "workload": {"image": IMAGE},
        "secrets": [
            sealed(keys, name, "api", TOKEN="tok-31"),
            sealed(keys, name, "smtp", PASSWORD="smtp-77"),
        ],
        "encryption": {"rotationPeriod": "1h"},
    }
    apply_tenant(cluster, name, spec)

    result = reconciler.reconcile(name)

    assert decoded(kube.get(SECRET, "api", namespace=namespace)) == {"TOKEN": b"tok-31"}
    assert decoded(kube.get(SECRET, "smtp", namespace=namespace)) == {"PASSWORD": b"smtp-77"}
    keyring = tenant_keyring(kube, namespace)
    assert keyring is not None
    assert result.requeue_after is not None
    assert result.requeue_after <= 3600
    obj = kube.get(TENANT, name)
    assert obj is not None
    status = obj["status"]
    assert status["keyVersion"] == 1
    assert status["nextRotation"] == "2030-01-01T13:00:00Z"
    assert status["secrets"] == [{"name": "api", "ready": True}, {"name": "smtp", "ready": True}]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["KeyringReady"]["status"] == "True"
    assert conditions["SecretsReady"]["status"] == "True"
    deployment = kube.get(DEPLOYMENT, "cleoai", namespace=namespace)
    assert deployment is not None
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "api"}} in env_from
    assert {"secretRef": {"name": "smtp"}} in env_from
    before = checksum(kube, namespace)

    # Converged: a reconcile writes no Secret (and the keyring stays as it is).
    versions = {n: resource_version(kube, namespace, n) for n in ("api", "smtp", "cleo-keyring")}
    again = reconciler.reconcile(name)
    assert not [ref for ref in again.applied if ref["kind"] == "Secret"]
    assert {n: resource_version(kube, namespace, n) for n in versions} == versions
    assert checksum(kube, namespace) == before

    # An hour later the keyring rotates and the pods roll onto the new key.
    clock.now = T0 + 61 * datetime.timedelta(minutes=1)
    reconciler.reconcile(name)
    rotated = tenant_keyring(kube, namespace)
    assert rotated is not None
    assert rotated.active_version == 2
    assert checksum(kube, namespace) != before
    obj = kube.get(TENANT, name)
    assert obj is not None
    assert obj["status"]["keyVersion"] == 2

    # A Secret removed from the spec is deleted; the keyring is not touched.
    spec["secrets"] = spec["secrets"][:1]
    apply_tenant(cluster, name, spec)
    reconciler.reconcile(name)
    assert kube.get(SECRET, "smtp", namespace=namespace) is None
    assert kube.get(SECRET, "api", namespace=namespace) is not None
    assert tenant_keyring(kube, namespace) == rotated
    deployment = kube.get(DEPLOYMENT, "cleoai", namespace=namespace)
    assert deployment is not None
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "smtp"}} not in env_from


def test_retain_deletion_keeps_the_unsealed_secrets_and_the_keyring(
    cluster: LocalCluster,
    kube: KubeClient,
    keys: OperatorKeys,
    reconciler: TenantReconciler,
    tenant: dict[str, str],
) -> None:
    name, namespace = tenant["name"], tenant["namespace"]
    apply_tenant(
        cluster, name, {"namespace": namespace, "secrets": [sealed(keys, name, "api", K="v-5")]}
    )
    reconciler.reconcile(name)
    obj = kube.get(TENANT, name)
    assert obj is not None
    # A control object owned by the tenant, which the garbage collector must take.
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "control",
                "namespace": namespace,
                "ownerReferences": [tenant_owner(name=name, uid=obj["metadata"]["uid"])],
            },
        }
    )
    keyring = tenant_keyring(kube, namespace)

    assert reconciler.finalize(name)
    cluster.kubectl("delete", "cleotenant", name, "--timeout=60s")
    wait_for(
        lambda: kube.get(CONFIG_MAP, "control", namespace=namespace) is None,
        timeout=60,
        what="the garbage collector to delete what the tenant still owned",
    )

    secret = kube.get(SECRET, "api", namespace=namespace)
    assert secret is not None
    assert decoded(secret) == {"K": b"v-5"}
    assert not secret["metadata"].get("ownerReferences")
    assert secret["metadata"]["labels"]["cleoai.io/orphaned"] == "true"
    assert tenant_keyring(kube, namespace) == keyring


def test_secrets_the_api_server_refuses_are_reported_per_secret(
    kube: KubeClient, keys: OperatorKeys
) -> None:
    tenant, namespace = _unique("quota"), _unique("quota-ns-")
    create_namespace(kube, namespace)
    try:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "secrets", "namespace": namespace},
                # Zero, not one: the quota controller recounts from a lagging cache, so a
                # limit of one can let a second Secret through for a moment.
                "spec": {"hard": {"secrets": "0"}},
            }
        )
        wait_for(
            lambda: quota_counted(kube, namespace),
            timeout=60,
            what="the quota controller to count the namespace",
        )
        items = [
            SealedSecret.model_validate(sealed(keys, tenant, "first", K="one-1")),
            SealedSecret.model_validate(sealed(keys, tenant, "second", K="two-2")),
        ]
        outcome = SecretsReconciler(kube, keys).reconcile(
            tenant=tenant,
            namespace=namespace,
            owner=tenant_owner(name=tenant, uid=str(uuid.uuid4())),
            secrets=items,
        )

        applied = apply_secrets(kube, outcome)

        assert applied.applied == ()
        for status, name in zip(applied.statuses, ("first", "second"), strict=True):
            assert status["name"] == name
            assert status["ready"] is False
            assert status["reason"] == "ApplyFailed"
            assert f"refused Secret {namespace}/{name} (403 Forbidden)" in status["message"]
            assert "exceeded quota" in status["message"]
        assert applied.condition.status == "False"
        assert applied.condition.reason == "ApplyFailed"
        assert "first write: ApplyFailed, second write: ApplyFailed" in applied.condition.message
        assert applied.fingerprints == {}, "neither exists, so neither goes into envFrom"
        assert kube.get(SECRET, "first", namespace=namespace) is None

        # The keyring cannot be written either, and says so instead of claiming the
        # namespace is missing.
        keyring = KeyringReconciler(kube, keys).reconcile(
            tenant=tenant,
            namespace=namespace,
            encryption=EncryptionSpec(),
            previous_status={},
            now=T0,
        )
        assert keyring.condition.reason == "KeyringWriteRefused"
        assert "exceeded quota" in keyring.condition.message
    finally:
        delete_namespace(kube, namespace)


def test_a_policy_that_echoes_a_value_does_not_put_it_into_status(
    cluster: LocalCluster, kube: KubeClient, keys: OperatorKeys
) -> None:
    tenant, namespace = _unique("vap"), _unique("vap-ns-")
    policy = f"cleo-test-echo-{namespace}"
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"cleo-test-echo": namespace}},
        }
    )
    # An admission policy whose denial message quotes the Secret's value, as a careless
    # webhook might.
    manifests = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["secrets"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.data) || !('TOKEN' in object.data)",
                        # Admission sees Secret data as base64, as webhooks do.
                        "messageExpression": (
                            "'TOKEN ' + string(object.data['TOKEN']) + ' is not allowed'"
                            " + ('PIN' in object.data"
                            " ? ', nor ' + string(object.data['PIN']) : '')"
                        ),
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"cleo-test-echo": namespace}}
                },
            },
        },
    ]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )
    try:
        items = [
            SealedSecret.model_validate(sealed(keys, tenant, "long", TOKEN="tok-3389-zz")),
            SealedSecret.model_validate(
                sealed(keys, tenant, "short", TOKEN="tok-3389-zz", PIN="x1")
            ),
        ]
        outcome = SecretsReconciler(kube, keys).reconcile(
            tenant=tenant,
            namespace=namespace,
            owner=tenant_owner(name=tenant, uid=str(uuid.uuid4())),
            secrets=items,
        )

        # A policy is enforced a moment after it is created: wait until a probe is denied.
        wait_for(
            lambda: (
                cluster.kubectl(
                    "create",
                    "secret",
                    "generic",
                    "probe",
                    "-n",
                    namespace,
                    "--from-literal=TOKEN=probe-1",
                    "--from-literal=PIN=p",
                    "--dry-run=server",
                    check=False,
                ).returncode
                != 0
            ),
            timeout=60,
            what="the admission policy to be enforced",
        )

        applied = apply_secrets(kube, outcome)

        long, short = applied.statuses
        assert long["reason"] == short["reason"] == "ApplyFailed"
        # What the policy said, with the values it quoted blanked out.
        assert long["message"].endswith("denied request: TOKEN *** is not allowed")
        assert short["message"].endswith("denied request: TOKEN *** is not allowed, nor ***")
        scanner = SecretScanner()
        scanner.add("TOKEN", "tok-3389-zz")
        scanner.add("PIN", "x1")
        scanner.assert_clean("status.secrets", json.dumps(applied.statuses))
        scanner.assert_clean("the condition", applied.condition.message)
    finally:
        for kind in ("ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy"):
            cluster.kubectl("delete", kind, policy, "--wait=false", check=False)
        delete_namespace(kube, namespace)

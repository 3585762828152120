"""Encryption end to end, as a platform team meets it: every step is a separate process.

`cleo-operator keys ...` and `cleo-operator seal` run as commands, kubectl applies the
CleoTenant, and the operator's tenant reconcile (`TenantReconciler` with `EncryptionPart`)
runs as its own process (`tests.integration.keys_harness tenant`, until the operator process
registers the part). Afterwards nothing a person can see (command output, status, Events)
holds a secret value or a key.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.specs import tenant_manifest
from tests.integration.keys_harness import SecretScanner, keys_cli, run_python

# These tests run the reconcilers in processes of their own: no operator may race them.
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.usefixtures("without_session_operator"),
]


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


@pytest.fixture
def setting(cluster: LocalCluster, crds_installed: None) -> Iterator[dict[str, str]]:
    """An operator namespace, a tenant name and its namespace, for this test only."""
    del crds_installed
    names = {
        "operator": _unique("e2e-keys-"),
        "tenant": _unique("pay"),
        "namespace": _unique("e2e-pay-"),
    }
    cluster.kubectl("create", "namespace", names["operator"])
    yield names
    cluster.kubectl("delete", "cleotenant", names["tenant"], "--wait=false", check=False)
    for ns in (names["operator"], names["namespace"]):
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


class Transcript:
    """Every command's output, to scan for secrets at the end."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.env = cluster.env()
        self.text: list[str] = []

    def keys(self, *args: str, input: str | None = None) -> str:
        result = keys_cli(self.env, *args, input=input)
        self.text.append(result.stdout + result.stderr)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def reconcile(self, tenant: str, operator_ns: str) -> dict[str, Any]:
        result = run_python(
            self.env,
            "tests.integration.keys_harness",
            "tenant",
            "--name",
            tenant,
            "--operator-namespace",
            operator_ns,
        )
        self.text.append(result.stdout + result.stderr)
        assert result.returncode == 0, result.stderr
        outcome: dict[str, Any] = json.loads(result.stdout)
        return outcome


def secret_data(cluster: LocalCluster, namespace: str, name: str) -> dict[str, bytes] | None:
    obj = kubectl_json(cluster, "get", "secret", name, "-n", namespace)
    if obj is None:
        return None
    return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}


def condition(tenant: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in tenant["status"]["conditions"]:
        if cond["type"] == type_:
            return dict(cond)
    raise AssertionError(f"no {type_} condition in {tenant['status']}")


def test_seal_apply_rotate_and_recover(
    cluster: LocalCluster, setting: dict[str, str], tmp_path: Path
) -> None:
    op, tenant, namespace = setting["operator"], setting["tenant"], setting["namespace"]
    run = Transcript(cluster)
    values = {"TOKEN": "tok-e2e-5521", "DSN": "dsn-e2e-8830", "NEW": "new-e2e-1207"}

    # 1. The operator's keys exist once; the public key can be fetched and used offline.
    init = run.keys("keys", "init", "--operator-namespace", op)
    assert run.keys("keys", "init", "--operator-namespace", op) == init
    pem = tmp_path / "sealing.pem"
    pem.write_text(run.keys("keys", "public", "--pem", "--operator-namespace", op))
    token_file = tmp_path / "token"
    token_file.write_text(values["TOKEN"])
    offline = run.keys(
        "seal",
        "--tenant",
        tenant,
        "--name",
        "api",
        "--from-file",
        f"TOKEN={token_file}",
        "--public-key",
        str(pem),
    )
    online = run.keys(
        "seal",
        "--tenant",
        tenant,
        "--name",
        "db",
        "--from-file",
        "DSN=-",
        "--operator-namespace",
        op,
        input=values["DSN"],
    )
    entries = yaml.safe_load(offline) + yaml.safe_load(online)

    # 2. The sealed YAML goes into the CleoTenant as it is; the Secrets appear.
    manifest: dict[str, Any] = tenant_manifest(tenant, {"namespace": namespace, "secrets": entries})
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    first = run.reconcile(tenant, op)
    assert first["conditions"]["KeyringReady"] == "KeyringAvailable"
    assert first["conditions"]["SecretsReady"] == "Unsealed"
    assert secret_data(cluster, namespace, "api") == {"TOKEN": values["TOKEN"].encode()}
    assert secret_data(cluster, namespace, "db") == {"DSN": values["DSN"].encode()}
    obj = kubectl_json(cluster, "get", "cleotenant", tenant)
    assert condition(obj, "SecretsReady")["status"] == "True"
    assert condition(obj, "KeyringReady")["status"] == "True"
    assert obj["status"]["keyVersion"] == 1
    assert [s["name"] for s in obj["status"]["secrets"]] == ["api", "db"]
    keyring = secret_data(cluster, namespace, "cleo-keyring")
    assert keyring is not None

    # 3. Sealing keys rotate: old values keep opening, new ones use the new key.
    rotated_public = run.keys("keys", "rotate-sealing", "--operator-namespace", op)
    assert rotated_public.strip() != init.strip()
    extra = run.keys(
        "seal",
        "--tenant",
        tenant,
        "--name",
        "extra",
        "--from-literal",
        f"NEW={values['NEW']}",
        "--operator-namespace",
        op,
    )
    assert rotated_public.split(":")[2] in extra, "sealed to the new key"
    manifest["spec"]["secrets"] = entries + yaml.safe_load(extra)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    second = run.reconcile(tenant, op)
    assert second["conditions"]["SecretsReady"] == "Unsealed"
    assert secret_data(cluster, namespace, "extra") == {"NEW": values["NEW"].encode()}

    # 4. The KEK rotates: the keyring copy is re-wrapped, the tenant keyring is untouched.
    assert "re-wrapped 1 keyring copy" in run.keys("keys", "rotate-kek", "--operator-namespace", op)
    status = run.keys("keys", "status", "--operator-namespace", op)
    assert f"{tenant}: wrapped by KEK v2\n" in status
    assert secret_data(cluster, namespace, "cleo-keyring") == keyring

    # 5. The namespace is deleted and comes back: the same keyring, the same Secrets.
    cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=90s")
    wait_for(
        lambda: kubectl_json(cluster, "get", "namespace", namespace) is None,
        timeout=90,
        what=f"namespace {namespace} to be gone",
    )
    third = run.reconcile(tenant, op)  # the reconcile makes the namespace again
    assert third["conditions"]["KeyringReady"] == "KeyringAvailable"
    assert "Namespace/" + namespace in third["applied"]
    assert secret_data(cluster, namespace, "cleo-keyring") == keyring
    assert secret_data(cluster, namespace, "db") == {"DSN": values["DSN"].encode()}
    assert secret_data(cluster, namespace, "api") == {"TOKEN": values["TOKEN"].encode()}

    # 6. Nothing a person can see holds a secret value or a key.
    scanner = SecretScanner()
    for value in values.values():
        scanner.add("a secret value", value)
    for name, key in keyring.items():
        if name.endswith(".key"):
            scanner.add(f"tenant key {name}", key)
    operator_secrets = json.loads(cluster.kubectl("get", "secrets", "-n", op, "-o", "json").stdout)[
        "items"
    ]
    for item in operator_secrets:
        if item["metadata"]["name"] in ("cleo-kek", "cleo-sealing-keys"):
            for name, encoded in item["data"].items():
                if not name.endswith(".json"):
                    scanner.add(f"{item['metadata']['name']} {name}", base64.b64decode(encoded))
    assert len(scanner.needles) > 20
    scanner.assert_clean("command output", "\n".join(run.text))
    scanner.assert_clean(
        "the CleoTenant", cluster.kubectl("get", "cleotenant", tenant, "-o", "yaml").stdout
    )
    for ns in (namespace, op):
        scanner.assert_clean(
            f"Events in {ns}", cluster.kubectl("get", "events", "-n", ns, "-o", "yaml").stdout
        )

"""Sealed secrets and keyrings through the real operator process.

`cleo-operator seal` seals with the public key the operator published; the operator
unseals into a Secret, refuses a tampered value (leaving the Secret as it was), and keeps
a tenant's keyring across a SIGKILL between two of its writes. Nothing it logs, posts as
an Event or writes to status holds a secret value.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OPERATOR_NAMESPACE, OperatorProcess, start_operator
from tests.harness.specs import IMAGE, tenant_manifest

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

REPO = Path(__file__).resolve().parent.parent
API_KEY = "sk-live-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def seal(cluster: LocalCluster, tenant: str, name: str, key: str, value: str) -> dict[str, Any]:
    """`cleo-operator seal`, the value on stdin (never in argv), with the cluster's key."""
    result = subprocess.run(
        [
            sys.executable, "-m", "cleo_operator.cli", "seal", "--tenant", tenant,
            "--name", name, "--operator-namespace", OPERATOR_NAMESPACE,
            "--from-file", f"{key}=-",
        ],
        input=value, cwd=REPO, env=cluster.env(), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert value not in result.stdout + result.stderr
    entry = yaml.safe_load(result.stdout)
    return dict(entry[0] if isinstance(entry, list) else entry)


def apply_tenant(cluster: LocalCluster, name: str, secrets: list[dict[str, Any]]) -> None:
    body = tenant_manifest(
        name,
        {
            "workload": {"image": IMAGE},
            "autoscaling": {"enabled": False},
            "secrets": secrets,
        },
    )
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))


def secret_value(cluster: LocalCluster, namespace: str, name: str, key: str) -> str | None:
    secret = kubectl_json(cluster, "get", "secret", name, "-n", namespace)
    if not secret:
        return None
    return base64.b64decode(secret["data"][key]).decode()


def status_of(cluster: LocalCluster, tenant: str) -> dict[str, Any]:
    obj = kubectl_json(cluster, "get", "cleotenant", tenant)
    return dict((obj or {}).get("status") or {})


def test_sealed_secret_is_unsealed_and_a_tampered_one_is_refused(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    tenant, namespace = "sealed", "cleo-sealed"
    entry = seal(cluster, tenant, "api-keys", "OPENAI_API_KEY", API_KEY)
    apply_tenant(cluster, tenant, [entry])
    wait_for(
        lambda: secret_value(cluster, namespace, "api-keys", "OPENAI_API_KEY") == API_KEY,
        timeout=60,
        what="the sealed value to be unsealed into the Secret",
    )
    # The Secret is written before the Deployment that mounts it: wait for that too.
    dep = wait_for(
        lambda: kubectl_json(cluster, "get", "deployment", "cleoai", "-n", namespace),
        timeout=60,
        what="the Deployment to exist",
    )
    env_from = dep["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "api-keys"}} in env_from
    checksum = dep["spec"]["template"]["metadata"]["annotations"]["cleoai.io/config-checksum"]

    # Flip one character of the sealed text: the Secret stays as it was, status says why.
    sealed = entry["data"]["OPENAI_API_KEY"]
    position = len(sealed) // 2
    flipped = "A" if sealed[position] != "A" else "B"
    tampered = {
        **entry,
        "data": {"OPENAI_API_KEY": sealed[:position] + flipped + sealed[position + 1 :]},
    }
    apply_tenant(cluster, tenant, [tampered])

    def refused() -> dict[str, Any] | None:
        for item in status_of(cluster, tenant).get("secrets") or []:
            if item["name"] == "api-keys" and not item["ready"]:
                return dict(item)
        return None

    item = wait_for(refused, timeout=60, what="the tampered value to be reported")
    assert item["reason"] in {"Tampered", "MalformedEnvelope"}
    assert "OPENAI_API_KEY" in item.get("message", "")
    conditions = {c["type"]: c for c in status_of(cluster, tenant)["conditions"]}
    assert conditions["SecretsReady"]["status"] == "False"
    assert secret_value(cluster, namespace, "api-keys", "OPENAI_API_KEY") == API_KEY
    dep = kubectl_json(cluster, "get", "deployment", "cleoai", "-n", namespace)
    assert dep["spec"]["template"]["metadata"]["annotations"]["cleoai.io/config-checksum"] == (
        checksum
    )

    # A value sealed for this tenant, copied into another, does not open there.
    apply_tenant(cluster, "thief", [entry])

    def wrong_context() -> bool:
        return any(
            i["name"] == "api-keys" and i.get("reason") == "WrongContext"
            for i in status_of(cluster, "thief").get("secrets") or []
        )

    wait_for(wrong_context, timeout=60, what="WrongContext for a value copied across tenants")
    assert kubectl_json(cluster, "get", "secret", "api-keys", "-n", "cleo-thief") is None

    # Nothing a person can see holds the value: logs, Events, status.
    events = cluster.kubectl("get", "events", "-A", "-o", "json").stdout
    statuses = json.dumps([status_of(cluster, t) for t in (tenant, "thief")])
    for text in (operator_process.all_logs(), events, statuses):
        assert API_KEY not in text
        assert base64.b64encode(API_KEY.encode()).decode() not in text


def keyring_material(cluster: LocalCluster, tenant: str) -> dict[str, Any]:
    copy = kubectl_json(
        cluster, "get", "secret", f"cleo-keyring-{tenant}", "-n", OPERATOR_NAMESPACE
    )
    home = kubectl_json(cluster, "get", "secret", "cleo-keyring", "-n", f"cleo-{tenant}")
    return {
        "copy": (copy or {}).get("data"),
        "tenant": (home or {}).get("data"),
    }


@pytest.mark.parametrize("step", ["keyring-copy-created", "keyring-tenant-created"])
def test_sigkill_between_keyring_steps_keeps_the_key(
    cluster: LocalCluster,
    operator_process: OperatorProcess,
    operator_sites: dict[str, str],
    tmp_path: Path,
    step: str,
) -> None:
    tenant = f"crash-{step.split('-')[1]}"
    operator_process.pause()
    try:
        crashing = start_operator(
            cluster,
            tmp_path / "crashing.log",
            extra_args=["--operator-namespace", OPERATOR_NAMESPACE],
            env={**operator_sites, "CLEO_FAULT_POINT": step},
        )
        apply_tenant(cluster, tenant, [])
        wait_for(lambda: not crashing.alive(), timeout=60, what=f"the operator to die at {step}")
        assert crashing.popen.returncode == -9, crashing.log_text()[-2000:]
        after_crash = keyring_material(cluster, tenant)
        assert after_crash["copy"], "the fault point is after the copy was written"
    finally:
        operator_process.resume()

    def keyring_ready() -> bool:
        conditions = {c["type"]: c for c in status_of(cluster, tenant).get("conditions") or []}
        return conditions.get("KeyringReady", {}).get("status") == "True"

    wait_for(keyring_ready, timeout=60, what="the keyring to be complete after the restart")
    healed = keyring_material(cluster, tenant)
    assert healed["copy"] == after_crash["copy"], "the copy (the keyring's truth) was replaced"
    assert healed["tenant"], "the tenant's keyring Secret was restored from the copy"
    if after_crash["tenant"]:
        assert healed["tenant"] == after_crash["tenant"]

"""Shared pieces of the key tests: processes that can be SIGKILLed, a secret scanner, helpers.

Crash tests need a process to kill, so the keyring reconcile also runs as
`python -m tests.integration.keys_harness keyring ...` (what the operator will call, with
its result printed as JSON: names, versions and fingerprints only), and the key commands as
`python -m cleo_operator.cli ...`. `CLEO_FAULT_POINT` in their environment makes them
SIGKILL themselves at that step.

`python -m tests.integration.keys_harness tenant --name N ...` runs the operator's real tenant
reconcile (`TenantReconciler`) with `EncryptionPart` for one CleoTenant, in its own process:
the end-to-end test of encryption uses it until the operator process registers the part.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import EncryptionSpec
from cleo_operator.crypto import Keyring, SealingKeyring, kek_from_secret_data, unwrap_keyring
from cleo_operator.kube.apply import needs_apply
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.keys import (
    KEK_SECRET,
    SEALING_SECRET,
    TENANT_KEYRING_SECRET,
    keyring_copy_name,
    read_keyring_copy,
    read_secret,
)
from cleo_operator.kube.kinds import EVENT, NAMESPACE, SECRET, TENANT
from cleo_operator.observability.logs import configure_logging
from cleo_operator.reconcile.encryption import EncryptionPart
from cleo_operator.reconcile.keys import KeyringReconciler, OperatorKeys
from cleo_operator.reconcile.tenant import TenantReconciler

REPO = Path(__file__).resolve().parents[2]


# -- processes --------------------------------------------------------------------------------


def run_python(
    env: Mapping[str, str],
    module: str,
    *args: str,
    fault: str | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args` against the cluster in `env`; never raises on failure."""
    full_env = dict(env)
    full_env.pop("CLEO_FAULT_POINT", None)
    if fault is not None:
        full_env["CLEO_FAULT_POINT"] = fault
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def keys_cli(
    env: Mapping[str, str], *args: str, fault: str | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`cleo-operator keys|seal ...` as its own process."""
    return run_python(env, "cleo_operator.cli", *args, fault=fault, input=input)


def keyring_process(
    env: Mapping[str, str],
    *,
    tenant: str,
    namespace: str,
    operator_namespace: str,
    rotation_period: str | None = None,
    now: datetime.datetime | None = None,
    fault: str | None = None,
    key_version: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """One keyring reconcile in its own process (see `main`); `key_version` is the
    tenant's previous `status.keyVersion` (None: the tenant never had keys)."""
    args = [
        "keyring",
        "--tenant",
        tenant,
        "--namespace",
        namespace,
        "--operator-namespace",
        operator_namespace,
    ]
    if rotation_period:
        args += ["--rotation-period", rotation_period]
    if now is not None:
        args += ["--now", now.isoformat()]
    if key_version is not None:
        args += ["--key-version", str(key_version)]
    return run_python(env, "tests.integration.keys_harness", *args, fault=fault)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one keyring reconcile and print its outcome as JSON (no key material in it)."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    keyring = sub.add_parser("keyring")
    keyring.add_argument("--tenant", required=True)
    keyring.add_argument("--namespace", required=True)
    keyring.add_argument("--operator-namespace", required=True)
    keyring.add_argument("--rotation-period")
    keyring.add_argument("--now", type=datetime.datetime.fromisoformat)
    keyring.add_argument("--key-version", type=int)
    tenant = sub.add_parser("tenant")
    tenant.add_argument("--name", required=True)
    tenant.add_argument("--operator-namespace", required=True)
    args = parser.parse_args(argv)
    configure_logging(level="DEBUG")
    kube = KubeClient.from_environment()
    keys = OperatorKeys.locate(kube, operator_namespace=args.operator_namespace, kek_dir=None)
    if args.command == "tenant":
        sys.stdout.write(json.dumps(reconcile_tenant_keys(kube, keys, args.name)) + "\n")
        return 0
    outcome = KeyringReconciler(kube, keys).reconcile(
        tenant=args.tenant,
        namespace=args.namespace,
        encryption=EncryptionSpec(rotation_period=args.rotation_period),
        previous_status={} if args.key_version is None else {"keyVersion": args.key_version},
        now=args.now or datetime.datetime.now(datetime.UTC),
    )
    result = {
        "condition": {
            "status": outcome.condition.status,
            "reason": outcome.condition.reason,
            "message": outcome.condition.message,
        },
        "status": dict(outcome.status),
        "fingerprint": outcome.fingerprint,
        "actions": list(outcome.actions),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def reconcile_tenant_keys(kube: KubeClient, keys: OperatorKeys, name: str) -> dict[str, Any]:
    """The real tenant reconcile with `EncryptionPart`, until the tenant's status reports it.

    A brand-new tenant may get its first status only once it is Ready (or after a grace
    period), so this reconciles again, as the operator's loop would, until it does.
    """
    reconciler = TenantReconciler(kube, parts=[EncryptionPart(kube, keys)])
    for _ in range(40):
        result = reconciler.reconcile(name)
        obj = kube.get(TENANT, name) or {}
        status = obj.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        generation = (obj.get("metadata") or {}).get("generation")
        if conditions.get("SecretsReady", {}).get("observedGeneration") == generation:
            return {
                "ready": result.ready,
                "conditions": {t: c["reason"] for t, c in conditions.items()},
                "applied": [f"{r['kind']}/{r['name']}" for r in result.applied],
            }
        time.sleep(0.5)
    raise AssertionError(f"tenant {name} never reported its keys and secrets")


# -- cluster helpers --------------------------------------------------------------------------


def create_namespace(kube: KubeClient, name: str) -> None:
    """Create a namespace (the tests make their own, named after themselves)."""
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def delete_namespace(kube: KubeClient, name: str) -> None:
    """Ask for a namespace's deletion and do not wait (teardown)."""
    kube.delete(NAMESPACE, name)


def tenant_keyring(kube: KubeClient, namespace: str) -> Keyring | None:
    """The keyring in the tenant Secret, or None."""
    stored = read_secret(kube, namespace=namespace, name=TENANT_KEYRING_SECRET)
    return None if stored is None else Keyring.from_secret_data(stored.data)


def copy_keyring(kube: KubeClient, operator_namespace: str, tenant: str) -> Keyring | None:
    """The keyring in the KEK-wrapped copy, opened with the KEK Secret, or None."""
    copy = read_keyring_copy(kube, operator_namespace=operator_namespace, tenant=tenant)
    if copy is None:
        return None
    kek_secret = read_secret(kube, namespace=operator_namespace, name=KEK_SECRET)
    assert kek_secret is not None
    return unwrap_keyring(copy.wrapped, kek_from_secret_data(kek_secret.data), tenant=tenant)


def resource_version(kube: KubeClient, namespace: str, name: str) -> str | None:
    """A Secret's resourceVersion, or None when it does not exist."""
    stored = read_secret(kube, namespace=namespace, name=name)
    return None if stored is None else stored.resource_version


def copy_version(kube: KubeClient, operator_namespace: str, tenant: str) -> str | None:
    """The copy Secret's resourceVersion."""
    return resource_version(kube, operator_namespace, keyring_copy_name(tenant))


def apply_desired(kube: KubeClient, desired: Iterable[KubeObject]) -> list[str]:
    """What the tenant reconciler does with desired children: apply those that need it."""
    applied = []
    for obj in desired:
        meta = obj["metadata"]
        live = kube.get(SECRET, meta["name"], namespace=meta["namespace"])
        if needs_apply(obj, live):
            kube.apply(obj)
            applied.append(meta["name"])
    return applied


# -- the secret scanner -----------------------------------------------------------------------


def _forms(value: bytes) -> set[str]:
    """The ways bytes could end up in text: raw, hex, base64 (both alphabets), repr."""
    forms = {
        value.hex(),
        base64.b64encode(value).decode(),
        base64.b64encode(value).decode().rstrip("="),
        base64.urlsafe_b64encode(value).decode().rstrip("="),
        repr(value)[2:-1],
    }
    with contextlib.suppress(UnicodeDecodeError):
        forms.add(value.decode("utf-8"))
    return {form for form in forms if len(form) >= 6}


@dataclass
class SecretScanner:
    """Every secret a test made, in every text form; `find` says which ones a text leaks."""

    needles: dict[str, str] = field(default_factory=dict)

    def add(self, label: str, value: bytes | str) -> None:
        raw = value.encode() if isinstance(value, str) else value
        for form in _forms(raw):
            self.needles[form] = label

    def add_keyring(self, label: str, keyring: Keyring) -> None:
        for key in keyring.keys:
            self.add(f"{label} {key.key_id}", key.material)

    def add_cluster_keys(
        self, kube: KubeClient, operator_namespace: str, tenant_namespaces: Iterable[str] = ()
    ) -> None:
        """Every key the operator holds in these namespaces."""
        kek = read_secret(kube, namespace=operator_namespace, name=KEK_SECRET)
        if kek is not None:
            for name, value in kek.data.items():
                self.add(f"KEK {name}", value)
        sealing = read_secret(kube, namespace=operator_namespace, name=SEALING_SECRET)
        if sealing is not None:
            for key in SealingKeyring.from_secret_data(sealing.data).keys:
                self.add(f"sealing key v{key.version}", key.private_raw)
        for namespace in tenant_namespaces:
            keyring = tenant_keyring(kube, namespace)
            if keyring is not None:
                self.add_keyring(f"keyring of {namespace}", keyring)

    def find(self, text: str) -> list[str]:
        return sorted({label for needle, label in self.needles.items() if needle in text})

    def assert_clean(self, what: str, text: str) -> None:
        leaked = self.find(text)
        assert not leaked, f"{what} contains secret material: {leaked}"


def events_text(kube: KubeClient, namespaces: Iterable[str]) -> str:
    """Every Event in these namespaces, as JSON text."""
    events = []
    for namespace in namespaces:
        events += kube.list(EVENT, namespace=namespace)
    return json.dumps(events)


def as_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


if __name__ == "__main__":
    sys.exit(main())

"""Sealed secrets on a real API server: `cleo-operator seal` output in a CleoTenant becomes a
real Secret; a value that fails to open leaves the old Secret as it was and says why.

The unsealing runs here through `SecretsReconciler` with the `kube` client, and the desired
Secrets are applied as the tenant reconciler applies children (`needs_apply`, then apply).
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleo_operator.api.base import set_condition
from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.crypto import SealingKeyring, seal
from cleo_operator.kube.apply import HASH_ANNOTATION
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import SECRET, TENANT
from cleo_operator.kube.status import write_status
from cleo_operator.reconcile.keys import (
    KeyringOutcome,
    KeyringReconciler,
    OperatorKeys,
    ensure_operator_keys,
)
from cleo_operator.reconcile.secrets import (
    SEALED_FINGERPRINT_ANNOTATION,
    SecretsOutcome,
    SecretsReconciler,
    stamp_secret,
    without_secret_values,
)
from cleo_operator.render.meta import tenant_owner
from e2e.cluster import LocalCluster
from tests.harness.specs import tenant_manifest
from tests.integration.keys_harness import (
    SecretScanner,
    apply_desired,
    as_json,
    create_namespace,
    delete_namespace,
    events_text,
    keys_cli,
)

# These tests run the reconcilers in processes of their own: no operator may race them.
pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("without_session_operator")]

NOW = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def op_ns(kube: KubeClient, crds_installed: None) -> Iterator[str]:
    del crds_installed
    name = _unique("keys-sec-")
    create_namespace(kube, name)
    ensure_operator_keys(kube, operator_namespace=name, kek_dir=None, now=NOW)
    yield name
    delete_namespace(kube, name)


@pytest.fixture(scope="module")
def keys(kube: KubeClient, op_ns: str) -> OperatorKeys:
    return OperatorKeys.locate(kube, operator_namespace=op_ns, kek_dir=None)


@pytest.fixture
def env(cluster: LocalCluster) -> dict[str, str]:
    return cluster.env()


@dataclass
class Tenant:
    """A CleoTenant of one test, with its own namespace."""

    name: str
    namespace: str
    cluster: LocalCluster
    kube: KubeClient
    keys: OperatorKeys

    def apply(self, secrets: list[dict[str, Any]]) -> None:
        body = tenant_manifest(self.name, {"namespace": self.namespace, "secrets": secrets})
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(body))

    def spec_secrets(self) -> list[dict[str, Any]]:
        obj = self.kube.get(TENANT, self.name)
        assert obj is not None
        return list(obj["spec"]["secrets"])

    def reconcile(self) -> SecretsOutcome:
        """What the tenant reconciler will do: unseal, then apply what is desired."""
        obj = self.kube.get(TENANT, self.name)
        assert obj is not None
        spec = parse_tenant_spec(obj["spec"])
        return SecretsReconciler(self.kube, self.keys).reconcile(
            tenant=self.name,
            namespace=self.namespace,
            owner=tenant_owner(name=self.name, uid=obj["metadata"]["uid"]),
            secrets=spec.secrets,
        )

    def secret(self, name: str) -> KubeObject | None:
        return self.kube.get(SECRET, name, namespace=self.namespace)

    def write_status(
        self, outcome: SecretsOutcome, keyring: KeyringOutcome | None = None
    ) -> KubeObject:
        """Write the outcome to the CleoTenant's status as the tenant reconciler will."""
        obj = self.kube.get(TENANT, self.name)
        assert obj is not None
        generation = int(obj["metadata"]["generation"])
        conditions: list[Any] = []
        for update in [outcome.condition] + ([keyring.condition] if keyring else []):
            conditions = set_condition(
                conditions,
                type=update.type,
                status=update.status,
                reason=update.reason,
                message=update.message,
                observed_generation=generation,
                now=NOW,
            )
        status: dict[str, Any] = {
            "conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions],
            "secrets": outcome.statuses,
            **(keyring.status if keyring else {}),
        }
        write_status(self.kube, TENANT, obj, status, owned_keys=frozenset(status))
        written = self.kube.get(TENANT, self.name)
        assert written is not None
        return written


@pytest.fixture
def tenant(
    cluster: LocalCluster, kube: KubeClient, keys: OperatorKeys, op_ns: str
) -> Iterator[Tenant]:
    del op_ns
    t = Tenant(_unique("sec"), _unique("sec-ns-"), cluster, kube, keys)
    create_namespace(kube, t.namespace)
    yield t
    cluster.kubectl("delete", "cleotenant", t.name, "--wait=false", check=False)
    delete_namespace(kube, t.namespace)


def seal_entry(
    env: dict[str, str], op_ns: str, tenant: str, name: str, *values: str
) -> dict[str, Any]:
    """`cleo-operator seal` as a person runs it, key from the cluster; its YAML, parsed."""
    args = ["seal", "--tenant", tenant, "--name", name, "--operator-namespace", op_ns]
    for value in values:
        args += ["--from-literal", value]
    result = keys_cli(env, *args)
    assert result.returncode == 0, result.stderr
    for value in values:
        plaintext = value.partition("=")[2]
        assert plaintext not in result.stdout + result.stderr
    entries = yaml.safe_load(result.stdout)
    assert isinstance(entries, list)
    assert len(entries) == 1
    return dict(entries[0])


def tampered(sealed: str) -> str:
    """The same envelope with one bit of its ciphertext flipped."""
    prefix = "cleo:v1:"
    raw = bytearray(base64.urlsafe_b64decode(sealed[len(prefix) :] + "=="))
    raw[-1] ^= 0x01
    return prefix + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def decoded(secret: KubeObject | None) -> dict[str, bytes]:
    assert secret is not None
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


# -- seal -> CleoTenant -> Secret ------------------------------------------------------------


def test_seal_output_in_a_cleotenant_becomes_a_real_secret(
    env: dict[str, str], op_ns: str, tenant: Tenant, tmp_path: Path
) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot really\n")
    args = ["seal", "--tenant", tenant.name, "--name", "api-keys", "--operator-namespace", op_ns]
    result = keys_cli(
        env,
        *args,
        "--from-literal",
        "TOKEN=tok-7f3a",
        "--from-file",
        f"tls.crt={cert}",
        "--from-file",
        "STDIN=-",
        input="from-stdin-91",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# spec.secrets entry of CleoTenant {tenant.name}")
    for plaintext in ("tok-7f3a", "not really", "from-stdin-91"):
        assert plaintext not in result.stdout + result.stderr
    tenant.apply(yaml.safe_load(result.stdout))  # the API server accepts it as it is

    outcome = tenant.reconcile()
    assert apply_desired(tenant.kube, outcome.desired) == ["api-keys"]

    assert outcome.ready, outcome.condition
    assert outcome.condition.reason == "Unsealed"
    assert outcome.statuses == [{"name": "api-keys", "ready": True}]
    secret = tenant.secret("api-keys")
    assert secret is not None
    assert decoded(secret) == {
        "TOKEN": b"tok-7f3a",
        "tls.crt": cert.read_bytes(),
        "STDIN": b"from-stdin-91",
    }
    assert secret["type"] == "Opaque"
    labels = secret["metadata"]["labels"]
    assert labels["cleoai.io/tenant"] == tenant.name
    assert labels["app.kubernetes.io/managed-by"] == "cleo-operator"
    assert labels["app.kubernetes.io/component"] == "secrets"
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("CleoTenant", tenant.name)
    tenant_obj = tenant.kube.get(TENANT, tenant.name)
    assert tenant_obj is not None
    assert owner["uid"] == tenant_obj["metadata"]["uid"]
    annotations = secret["metadata"]["annotations"]
    assert annotations[SEALED_FINGERPRINT_ANNOTATION] == outcome.fingerprints["api-keys"]
    # The write-decision hash does not depend on the plaintext at all.
    desired = outcome.desired[0]
    other = stamp_secret({**desired, "data": {"TOKEN": base64.b64encode(b"x").decode()}})
    assert other["metadata"]["annotations"][HASH_ANNOTATION] == annotations[HASH_ANNOTATION]

    # Nothing changed: nothing is written.
    assert apply_desired(tenant.kube, tenant.reconcile().desired) == []
    # A value edited by hand is put back.
    tenant.cluster.kubectl(
        "patch",
        "secret",
        "api-keys",
        "-n",
        tenant.namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": {"TOKEN": "ZWRpdGVk"}}),
    )
    assert apply_desired(tenant.kube, tenant.reconcile().desired) == ["api-keys"]
    assert decoded(tenant.secret("api-keys"))["TOKEN"] == b"tok-7f3a"


def test_a_tampered_value_keeps_the_old_secret_and_says_which_key(
    env: dict[str, str], op_ns: str, tenant: Tenant
) -> None:
    tenant.apply([seal_entry(env, op_ns, tenant.name, "db", "USER=app", "PASSWORD=pw-1")])
    first = tenant.reconcile()
    apply_desired(tenant.kube, first.desired)
    before = tenant.secret("db")
    assert before is not None

    # A new, valid USER and a tampered PASSWORD: all or nothing, so USER is not applied.
    entry = seal_entry(env, op_ns, tenant.name, "db", "USER=admin", "PASSWORD=pw-2")
    entry["data"]["PASSWORD"] = tampered(entry["data"]["PASSWORD"])
    tenant.apply([entry])

    outcome = tenant.reconcile()
    assert apply_desired(tenant.kube, outcome.desired) == []

    assert outcome.desired == []
    [status] = outcome.statuses
    assert status["name"] == "db"
    assert not status["ready"]
    assert status["reason"] == "Tampered"
    assert "Secret db was left as it was" in status["message"]
    assert "key [PASSWORD] Tampered" in status["message"]
    assert "USER" not in status["message"]
    assert outcome.condition.status == "False"
    assert outcome.condition.reason == "Tampered"
    assert "db key [PASSWORD]: Tampered" in outcome.condition.message
    after = tenant.secret("db")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert decoded(after) == {"USER": b"app", "PASSWORD": b"pw-1"}
    # The checksum keeps the fingerprint of what the Secret still holds: no pod restart.
    assert outcome.fingerprints == first.fingerprints


@pytest.mark.security
def test_a_value_sealed_for_tenant_a_fails_in_tenant_b_with_wrong_context(
    env: dict[str, str], op_ns: str, tenant: Tenant, kube: KubeClient, keys: OperatorKeys
) -> None:
    tenant.apply([seal_entry(env, op_ns, tenant.name, "shared", "KEY=a-only-secret")])
    assert tenant.reconcile().ready
    other = Tenant(_unique("secb"), _unique("sec-ns-"), tenant.cluster, kube, keys)
    create_namespace(kube, other.namespace)
    try:
        other.apply(tenant.spec_secrets())  # copied as is into tenant B

        outcome = other.reconcile()

        assert outcome.desired == []
        [status] = outcome.statuses
        assert status["reason"] == "WrongContext"
        assert f"tenant '{tenant.name}'" in status["message"]
        assert f"tenant '{other.name}'" in status["message"]
        assert "differs in: tenant" in status["message"]
        assert outcome.condition.reason == "WrongContext"
        assert other.secret("shared") is None
    finally:
        other.cluster.kubectl("delete", "cleotenant", other.name, "--wait=false", check=False)
        delete_namespace(kube, other.namespace)


def test_each_failure_has_its_reason_and_good_secrets_still_apply(
    env: dict[str, str], op_ns: str, tenant: Tenant
) -> None:
    foreign_key = SealingKeyring.generate(NOW).public_key
    renamed = seal_entry(env, op_ns, tenant.name, "original", "K=renamed-value")
    tenant.apply(
        [
            seal_entry(env, op_ns, tenant.name, "good", "K=good-value"),
            {
                "name": "foreign",
                "data": {
                    "K": seal(
                        foreign_key,
                        tenant=tenant.name,
                        secret="foreign",
                        key="K",
                        plaintext=b"foreign-value",
                    )
                },
            },
            {"name": "plain", "data": {"K": "plain-text-not-sealed"}},
            {"name": "renamed", "data": renamed["data"]},
        ]
    )

    outcome = tenant.reconcile()
    apply_desired(tenant.kube, outcome.desired)

    reasons = {s["name"]: (s["ready"], s.get("reason")) for s in outcome.statuses}
    assert reasons == {
        "good": (True, None),
        "foreign": (False, "UnknownKeyVersion"),
        "plain": (False, "MalformedEnvelope"),
        "renamed": (False, "WrongContext"),
    }
    messages = {s["name"]: s.get("message", "") for s in outcome.statuses}
    assert foreign_key.key_id in messages["foreign"]
    assert "seal it again" in messages["foreign"]
    assert "differs in: secret" in messages["renamed"]
    assert "plain-text-not-sealed" not in as_json(outcome.statuses)
    assert outcome.condition.reason == "UnsealFailed"
    assert "3 of 4 sealed secret(s)" in outcome.condition.message
    assert decoded(tenant.secret("good")) == {"K": b"good-value"}
    for name in ("foreign", "plain", "renamed"):
        assert tenant.secret(name) is None
    assert set(outcome.fingerprints) == {"good"}


def test_the_fingerprint_follows_the_sealed_text_not_the_plaintext(
    env: dict[str, str], op_ns: str, tenant: Tenant
) -> None:
    tenant.apply([seal_entry(env, op_ns, tenant.name, "s", "K=same-value")])
    first = tenant.reconcile()
    apply_desired(tenant.kube, first.desired)
    tenant.apply([seal_entry(env, op_ns, tenant.name, "s", "K=same-value")])

    second = tenant.reconcile()

    assert second.fingerprints["s"] != first.fingerprints["s"]
    assert second.desired[0]["data"] == first.desired[0]["data"]


def test_without_sealing_keys_nothing_is_touched(
    cluster: LocalCluster, kube: KubeClient, env: dict[str, str], op_ns: str, tenant: Tenant
) -> None:
    tenant.apply([seal_entry(env, op_ns, tenant.name, "s", "K=value-41c9")])
    empty = _unique("keys-none-")
    create_namespace(kube, empty)
    try:
        tenant.keys = OperatorKeys.locate(kube, operator_namespace=empty, kek_dir=None)

        outcome = tenant.reconcile()

        assert outcome.desired == []
        assert outcome.condition.reason == "SealingKeysUnavailable"
        assert f"{empty}/cleo-sealing-keys does not exist" in outcome.condition.message
        assert outcome.statuses == [
            {
                "name": "s",
                "ready": False,
                "reason": "SealingKeysUnavailable",
                "message": "the operator's sealing keys cannot be read; the Secret was left as "
                "it was",
            }
        ]
    finally:
        delete_namespace(kube, empty)


@pytest.mark.security
def test_no_secret_in_status_logs_or_events(
    caplog: pytest.LogCaptureFixture,
    env: dict[str, str],
    op_ns: str,
    tenant: Tenant,
    kube: KubeClient,
) -> None:
    caplog.set_level("DEBUG")
    plaintexts = ["pw-Zq81-ok", "pw-Zq81-tampered", "plain-Zq81-unsealed"]
    good = seal_entry(env, op_ns, tenant.name, "good", f"PASSWORD={plaintexts[0]}")
    bad = seal_entry(env, op_ns, tenant.name, "bad", f"PASSWORD={plaintexts[1]}")
    bad["data"]["PASSWORD"] = tampered(bad["data"]["PASSWORD"])
    plain = {"name": "plain", "data": {"PASSWORD": plaintexts[2]}}
    tenant.apply([good, bad, plain])
    keyring = KeyringReconciler(kube, tenant.keys).reconcile(
        tenant=tenant.name,
        namespace=tenant.namespace,
        encryption=parse_tenant_spec({}).encryption,
        previous_status={},
        now=NOW,
    )
    outcome = tenant.reconcile()
    apply_desired(kube, outcome.desired)

    written = tenant.write_status(outcome, keyring)

    status = written["status"]
    assert {c["type"] for c in status["conditions"]} == {"SecretsReady", "KeyringReady"}
    assert [s["name"] for s in status["secrets"]] == ["good", "bad", "plain"]
    assert status["keyVersion"] == 1
    scanner = SecretScanner()
    scanner.add_cluster_keys(kube, op_ns, [tenant.namespace])
    for plaintext in plaintexts:
        scanner.add("a secret value", plaintext)
    assert scanner.find(json.dumps({"x": plaintexts[1]})) == ["a secret value"]
    scanner.assert_clean("the tenant's status", as_json(status))
    scanner.assert_clean("the outcome", as_json([outcome.statuses, outcome.condition]))
    scanner.assert_clean("the keyring outcome", as_json(keyring))
    scanner.assert_clean("the log", caplog.text)
    scanner.assert_clean("Events", events_text(kube, [tenant.namespace, op_ns, "default"]))


def test_a_refusal_message_that_quotes_a_value_is_blanked_or_withheld() -> None:
    secret = {
        "data": {
            "TOKEN": base64.b64encode(b"tok-long-value").decode(),
            "PIN": base64.b64encode(b"42").decode(),
        }
    }
    token_b64 = secret["data"]["TOKEN"]
    # A webhook that quotes the value, plain or as it received it (base64), is blanked out.
    assert without_secret_values(f"denied: TOKEN=tok-long-value ({token_b64})", secret) == (
        "denied: TOKEN=*** (***)"
    )
    # A value too short to blank out without garbling the text withholds the message.
    assert without_secret_values("denied: PIN 42 is too short", secret) == (
        "(message withheld: it would show a value of the Secret)"
    )
    assert without_secret_values("exceeded quota: secrets=1", secret) == (
        "exceeded quota: secrets=1"
    )

"""A tenant admin writes the tenant's keyring Secret; the operator's truth does not move.

The attacker is a user of the tenant's `spec.admins`, bound to `cleo-tenant-admin` by the
RoleBinding the operator renders: RBAC lets them write every Secret of their namespace,
including `cleo-keyring` (without the admission policy of deploy/admission, which these tests
leave out on purpose: the reconciler must hold on its own). Each test attacks, runs the
operator's reconciler, and checks that the KEK-wrapped copy in the operator namespace is
byte-for-byte what it was, that the tenant Secret equals it again, that the condition says
what happened, and that what a backup encrypts with (the Secret as the runner mounts it)
opens with the operator's keyring and not with the attacker's.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cleo_operator.api.tenant import EncryptionSpec
from cleo_operator.backup.commands import load_keyring_dir
from cleo_operator.crypto import CryptoError, Keyring
from cleo_operator.crypto.keyring import DataKey
from cleo_operator.crypto.stream import new_stream_key, open_stream_key
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.keys import TENANT_KEYRING_SECRET, keyring_copy_name, read_secret
from cleo_operator.kube.kinds import NAMESPACE, SECRET, TENANT
from cleo_operator.reconcile.encryption import EncryptionPart
from cleo_operator.reconcile.keys import (
    KeyringOutcome,
    KeyringReconciler,
    OperatorKeys,
    adopt_quarantined,
    ensure_operator_keys,
)
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.meta import ADOPT_ANNOTATION, TENANT_UID_LABEL
from e2e.cluster import LocalCluster
from tests.harness.specs import tenant_manifest
from tests.integration.keys_harness import (
    SecretScanner,
    copy_keyring,
    events_text,
    keyring_process,
)
from tests.security.tenant_writable_support import (
    ATTACKER,
    attacker_client,
    bind_tenant_admin,
    create_tenant_namespace,
    new_name,
)

pytestmark = [
    pytest.mark.security,
    pytest.mark.cluster,
    pytest.mark.usefixtures("without_session_operator"),
]

T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
ATTACKER_KEY = bytes(range(32))
"""The key bytes the attacker chooses (any 32 bytes they know)."""
BACKUP_CONTEXT = {"purpose": "backup", "tenant": "test"}


@dataclass
class Scene:
    """A tenant with a keyring, its namespace, its admin (the attacker) and the operator."""

    tenant: str
    namespace: str
    operator_namespace: str
    kube: KubeClient
    attacker: KubeClient
    keys: OperatorKeys

    def reconcile(self) -> KeyringOutcome:
        return KeyringReconciler(self.kube, self.keys).reconcile(
            tenant=self.tenant,
            namespace=self.namespace,
            encryption=EncryptionSpec(),
            previous_status={"keyVersion": 1},
            now=T0 + datetime.timedelta(hours=1),
        )

    def copy_secret(self) -> dict[str, Any]:
        obj = self.kube.get(
            SECRET, keyring_copy_name(self.tenant), namespace=self.operator_namespace
        )
        assert obj is not None
        return obj

    def tenant_data(self) -> dict[str, bytes] | None:
        stored = read_secret(self.kube, namespace=self.namespace, name=TENANT_KEYRING_SECRET)
        return None if stored is None else dict(stored.data)

    def copy_keyring(self) -> Keyring:
        keyring = copy_keyring(self.kube, self.operator_namespace, self.tenant)
        assert keyring is not None
        return keyring

    def quarantined(self) -> list[dict[str, Any]]:
        return self.kube.list(
            SECRET,
            namespace=self.operator_namespace,
            label_selector=(
                "app.kubernetes.io/managed-by=cleo-operator,"
                f"app.kubernetes.io/component=keyring-quarantine,cleoai.io/tenant={self.tenant}"
            ),
        )

    def write_as_attacker(self, data: dict[str, bytes]) -> None:
        """PUT the keyring Secret with `data`, as the tenant admin (RBAC allows it)."""
        self.attacker.request(
            "PUT",
            f"/api/v1/namespaces/{self.namespace}/secrets/{TENANT_KEYRING_SECRET}",
            body={
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": TENANT_KEYRING_SECRET, "namespace": self.namespace},
                "data": _encoded(data),
            },
        )


@pytest.fixture(scope="module")
def op_ns(kube: KubeClient, crds_installed: None) -> Iterator[str]:
    name = new_name("tw-op")
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    ensure_operator_keys(kube, operator_namespace=name, kek_dir=None, now=T0)
    yield name
    kube.delete(NAMESPACE, name)


@pytest.fixture
def scene(cluster: LocalCluster, kube: KubeClient, op_ns: str) -> Iterator[Scene]:
    tenant = new_name("tw")
    namespace = f"cleo-{tenant}"
    create_tenant_namespace(kube, namespace, tenant)
    bind_tenant_admin(kube, tenant=tenant, namespace=namespace, user=ATTACKER)
    keys = OperatorKeys.locate(kube, operator_namespace=op_ns, kek_dir=None)
    s = Scene(tenant, namespace, op_ns, kube, attacker_client(cluster, kube), keys)
    first = KeyringReconciler(kube, keys).reconcile(
        tenant=tenant,
        namespace=namespace,
        encryption=EncryptionSpec(),
        previous_status={},
        now=T0,
    )
    assert first.ready, first.condition
    yield s
    kube.delete(NAMESPACE, namespace)


def _encoded(data: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


def _mounted(data: dict[str, bytes], folder: Path) -> Keyring:
    """The keyring the backup runner loads from the Secret mounted as files."""
    folder.mkdir(parents=True)
    for key, value in data.items():
        (folder / key).write_bytes(value)
    return load_keyring_dir(folder)


def _assert_truth_kept(
    scene: Scene, copy_before: dict[str, Any], operator_keyring: Keyring, tmp_path: Path
) -> None:
    copy_after = scene.copy_secret()
    assert copy_after["data"] == copy_before["data"], "the copy's bytes changed"
    assert copy_after["metadata"]["resourceVersion"] == copy_before["metadata"]["resourceVersion"]
    assert scene.copy_keyring() == operator_keyring
    data = scene.tenant_data()
    assert data == operator_keyring.to_secret_data(), "the tenant Secret is not the copy again"
    # What a backup started now encrypts with: the operator's keyring, not the attacker's.
    runner_keyring = _mounted(data, tmp_path / "keyring")
    stream_key = new_stream_key(runner_keyring, context=BACKUP_CONTEXT)
    assert open_stream_key(operator_keyring, stream_key.wrapped, context=BACKUP_CONTEXT)
    assert all(k.material != ATTACKER_KEY for k in runner_keyring.keys)


def test_tenant_admin_can_write_the_keyring_secret_at_all(scene: Scene) -> None:
    """The premise of this file: RBAC lets the tenant admin write the keyring Secret."""
    stored = read_secret(scene.attacker, namespace=scene.namespace, name=TENANT_KEYRING_SECRET)
    assert stored is not None
    scene.write_as_attacker(dict(stored.data))


def test_an_added_version_with_attacker_chosen_bytes_is_not_imported(
    scene: Scene, tmp_path: Path
) -> None:
    operator_keyring = scene.copy_keyring()
    copy_before = scene.copy_secret()
    injected = Keyring(
        keys=(
            *operator_keyring.keys,
            DataKey(version=2, created=T0, material=ATTACKER_KEY),
        ),
        active_version=2,
    )
    scene.write_as_attacker(injected.to_secret_data())

    outcome = scene.reconcile()

    assert outcome.ready
    assert outcome.condition.reason == "TenantKeyringRepaired"
    message = outcome.condition.message
    assert f"{scene.namespace}/{TENANT_KEYRING_SECRET}" in message
    assert "version(s) v2 that the copy does not" in message
    assert outcome.status["keyVersion"] == 1
    _assert_truth_kept(scene, copy_before, operator_keyring, tmp_path)
    (kept,) = scene.quarantined()
    assert base64.b64decode(kept["data"]["v2.key"]) == ATTACKER_KEY, "kept for review"
    scanner = SecretScanner()
    scanner.add("attacker key", ATTACKER_KEY)
    scanner.add_keyring("operator keyring", operator_keyring)
    scanner.assert_clean("the condition", message)
    # A second reconcile writes nothing more and still tells the truth.
    again = scene.reconcile()
    assert again.actions == ()
    assert again.condition.reason == "TenantKeyringRepaired"
    assert (
        scene.copy_secret()["metadata"]["resourceVersion"]
        == (copy_before["metadata"]["resourceVersion"])
    )


def test_a_replaced_current_key_is_repaired_from_the_copy(scene: Scene, tmp_path: Path) -> None:
    operator_keyring = scene.copy_keyring()
    copy_before = scene.copy_secret()
    (v1,) = operator_keyring.keys
    replaced = Keyring(
        keys=(DataKey(version=1, created=v1.created, material=ATTACKER_KEY),), active_version=1
    )
    scene.write_as_attacker(replaced.to_secret_data())

    outcome = scene.reconcile()

    assert outcome.condition.reason == "TenantKeyringRepaired"
    assert "a different key for v1" in outcome.condition.message
    assert outcome.fingerprint == operator_keyring.fingerprint()
    _assert_truth_kept(scene, copy_before, operator_keyring, tmp_path)
    assert len(scene.quarantined()) == 1


def test_a_deleted_keyring_secret_is_restored_from_the_copy(scene: Scene, tmp_path: Path) -> None:
    operator_keyring = scene.copy_keyring()
    copy_before = scene.copy_secret()
    assert scene.attacker.delete(SECRET, TENANT_KEYRING_SECRET, namespace=scene.namespace)

    outcome = scene.reconcile()

    assert outcome.ready
    assert any("from its copy" in action for action in outcome.actions)
    _assert_truth_kept(scene, copy_before, operator_keyring, tmp_path)
    assert scene.quarantined() == [], "nothing was held that needs review"


def test_removed_versions_and_garbage_are_repaired(scene: Scene, tmp_path: Path) -> None:
    # A rotated keyring, so a version can be removed.
    rotated = KeyringReconciler(scene.kube, scene.keys).reconcile(
        tenant=scene.tenant,
        namespace=scene.namespace,
        encryption=EncryptionSpec(rotation_period="1h"),
        previous_status={"keyVersion": 1},
        now=T0 + datetime.timedelta(hours=2),
    )
    assert rotated.status["keyVersion"] == 2
    operator_keyring = scene.copy_keyring()
    copy_before = scene.copy_secret()
    v1, _ = operator_keyring.keys
    scene.write_as_attacker(Keyring(keys=(v1,), active_version=1).to_secret_data())

    removed = scene.reconcile()

    assert removed.condition.reason == "TenantKeyringRepaired"
    assert "it lacks version(s) v2" in removed.condition.message
    assert scene.quarantined() == [], "a subset of the copy holds nothing new"
    _assert_truth_kept(scene, copy_before, operator_keyring, tmp_path)

    scene.write_as_attacker({"keyring.json": b"{not json", "notes.txt": b"hello"})
    garbage = scene.reconcile()
    assert garbage.condition.reason == "TenantKeyringRepaired"
    assert "cannot be read as a keyring" in garbage.condition.message
    _assert_truth_kept(scene, copy_before, operator_keyring, tmp_path / "again")
    assert scene.tenant_data() is not None
    assert "notes.txt" not in (scene.tenant_data() or {}), "extra entries are removed"
    (kept,) = scene.quarantined()
    assert base64.b64decode(kept["data"]["notes.txt"]) == b"hello"


def _assert_warned_without_keys(
    kube: KubeClient,
    namespace: str,
    reason: str,
    status: dict[str, Any],
    operator_keyring: Keyring,
) -> SecretScanner:
    """A Warning Event says `reason`; neither it nor `status` holds the attacker's key or
    the operator's keyring. Returns the scanner, for more text to check."""
    events = json.loads(events_text(kube, ["default", namespace]))
    warnings = [e for e in events if e.get("reason") == reason]
    assert warnings, f"a Warning Event says {reason}"
    assert warnings[0]["type"] == "Warning"
    scanner = SecretScanner()
    scanner.add("attacker key", ATTACKER_KEY)
    scanner.add_keyring("operator keyring", operator_keyring)
    scanner.assert_clean("the status", json.dumps(status))
    scanner.assert_clean("the Events", json.dumps(warnings))
    return scanner


def test_the_tenant_reconcile_reports_the_repair_on_status_and_as_an_event(
    cluster: LocalCluster,
    kube: KubeClient,
    op_ns: str,
    operator_tenant: OperatorTenant,
) -> None:
    """The operator's tenant reconcile (with its encryption part) end to end."""
    tenant = new_name("twr")
    namespace = f"cleo-{tenant}"
    reconciler = operator_tenant(
        tenant, {"namespace": namespace, "admins": [{"kind": "User", "name": ATTACKER}]}
    )
    reconciler.reconcile(tenant)
    reconciler.reconcile(tenant)
    attacker = attacker_client(cluster, kube)
    stored = read_secret(attacker, namespace=namespace, name=TENANT_KEYRING_SECRET)
    assert stored is not None, "the operator's RoleBinding lets the admin read it"
    operator_keyring = Keyring.from_secret_data(stored.data)
    injected = Keyring(
        keys=(*operator_keyring.keys, DataKey(version=2, created=T0, material=ATTACKER_KEY)),
        active_version=2,
    )
    attacker.patch_merge(
        SECRET,
        TENANT_KEYRING_SECRET,
        {"data": {k: base64.b64encode(v).decode() for k, v in injected.to_secret_data().items()}},
        namespace=namespace,
    )

    reconciler.reconcile(tenant)

    obj = kube.get(TENANT, tenant)
    assert obj is not None
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    keyring = conditions["KeyringReady"]
    assert keyring["status"] == "True"
    assert keyring["reason"] == "TenantKeyringRepaired"
    assert f"{namespace}/{TENANT_KEYRING_SECRET}" in keyring["message"]
    assert obj["status"]["keyVersion"] == 1
    assert copy_keyring(kube, op_ns, tenant) == operator_keyring
    _assert_warned_without_keys(
        kube, namespace, "TenantKeyringRepaired", obj["status"], operator_keyring
    )


def test_a_quarantine_secret_is_never_read_as_a_keyring(scene: Scene, tmp_path: Path) -> None:
    """An attacker cannot write the operator namespace; but even a quarantine Secret that
    holds a well-formed keyring never flows back into the copy or the tenant Secret."""
    operator_keyring = scene.copy_keyring()
    copy_before = scene.copy_secret()
    scene.write_as_attacker(
        Keyring(
            keys=(DataKey(version=1, created=T0, material=ATTACKER_KEY),), active_version=1
        ).to_secret_data()
    )
    scene.reconcile()
    # The next run, with the quarantine Secret present, changes nothing.
    outcome = scene.reconcile()
    assert outcome.actions == ()
    _assert_truth_kept(scene, copy_before, operator_keyring, tmp_path)
    with pytest.raises(CryptoError):
        open_stream_key(
            Keyring(
                keys=(DataKey(version=1, created=T0, material=ATTACKER_KEY),), active_version=1
            ),
            new_stream_key(operator_keyring, context=BACKUP_CONTEXT).wrapped,
            context=BACKUP_CONTEXT,
        )


# -- a keyring that was there before the tenant had keys (review finding 3) ---------------------


def _planted() -> Keyring:
    """The keyring an attacker plants: one version, with key bytes they chose."""
    return Keyring(keys=(DataKey(version=1, created=T0, material=ATTACKER_KEY),), active_version=1)


def _plant(attacker: KubeClient, namespace: str, keyring: Keyring) -> None:
    attacker.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        body={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": TENANT_KEYRING_SECRET, "namespace": namespace},
            "data": _encoded(keyring.to_secret_data()),
        },
    )


def _quarantine_of(kube: KubeClient, op_ns: str, tenant: str) -> list[dict[str, Any]]:
    return kube.list(
        SECRET,
        namespace=op_ns,
        label_selector=(
            "app.kubernetes.io/managed-by=cleo-operator,"
            f"app.kubernetes.io/component=keyring-quarantine,cleoai.io/tenant={tenant}"
        ),
    )


OperatorTenant = Callable[[str, dict[str, Any]], TenantReconciler]


@pytest.fixture
def operator_tenant(kube: KubeClient, op_ns: str) -> Iterator[OperatorTenant]:
    """`operator_tenant(name, spec)` creates the CleoTenant and returns the operator's tenant
    reconciler (with its encryption part); after the test the tenants, their namespaces
    (``spec.namespace``) and whatever of theirs was quarantined are deleted."""
    made: list[tuple[str, str]] = []

    def make(tenant: str, spec: dict[str, Any]) -> TenantReconciler:
        kube.create(tenant_manifest(tenant, spec))
        made.append((tenant, spec["namespace"]))
        keys = OperatorKeys.locate(kube, operator_namespace=op_ns, kek_dir=None)
        return TenantReconciler(kube, parts=[EncryptionPart(kube, keys)])

    yield make
    for tenant, namespace in made:
        kube.delete(TENANT, tenant)
        kube.delete(NAMESPACE, namespace)
        for kept_secret in _quarantine_of(kube, op_ns, tenant):
            kube.delete(SECRET, kept_secret["metadata"]["name"], namespace=op_ns)


@pytest.fixture
def newcomer(scene: Scene) -> Iterator[str]:
    """A tenant name new to the scene's namespace; its copy and quarantined Secrets are
    deleted after the test."""
    name = new_name("twn")
    yield name
    scene.kube.delete(SECRET, keyring_copy_name(name), namespace=scene.operator_namespace)
    for kept_secret in _quarantine_of(scene.kube, scene.operator_namespace, name):
        scene.kube.delete(
            SECRET, kept_secret["metadata"]["name"], namespace=scene.operator_namespace
        )


def test_a_keyring_planted_before_adoption_is_quarantined_not_imported(
    cluster: LocalCluster,
    kube: KubeClient,
    op_ns: str,
    tmp_path: Path,
    operator_tenant: OperatorTenant,
) -> None:
    """Finding 3 (A): someone who could write Secrets in a namespace before its owner handed
    it to a tenant (`cleoai.io/adopt`) plants `cleo-keyring`. The tenant's first reconcile
    must not make it the tenant's keys: it is quarantined and a new keyring is made."""
    tenant = new_name("twp")
    namespace = new_name("twp-ns")
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "annotations": {ADOPT_ANNOTATION: tenant}},
        }
    )
    # The namespace's earlier users (here: the attacker) could write its Secrets.
    bind_tenant_admin(kube, tenant=tenant, namespace=namespace, user=ATTACKER)
    attacker = attacker_client(cluster, kube)
    planted = _planted()
    _plant(attacker, namespace, planted)
    reconciler = operator_tenant(
        tenant, {"namespace": namespace, "admins": [{"kind": "User", "name": ATTACKER}]}
    )
    reconciler.reconcile(tenant)

    obj = kube.get(TENANT, tenant)
    assert obj is not None
    ns = kube.get(NAMESPACE, namespace)
    assert ns is not None
    assert ns["metadata"]["labels"].get(TENANT_UID_LABEL) == obj["metadata"]["uid"], (
        "the premise: the namespace was adopted by the tenant"
    )
    operator_keyring = copy_keyring(kube, op_ns, tenant)
    assert operator_keyring is not None
    assert all(k.material != ATTACKER_KEY for k in operator_keyring.keys), (
        "the planted key became the tenant's"
    )
    stored = read_secret(kube, namespace=namespace, name=TENANT_KEYRING_SECRET)
    assert stored is not None
    assert dict(stored.data) == operator_keyring.to_secret_data()
    # What a backup encrypts with now does not open with the attacker's keyring.
    runner = _mounted(dict(stored.data), tmp_path / "keyring")
    wrapped = new_stream_key(runner, context=BACKUP_CONTEXT).wrapped
    with pytest.raises(CryptoError):
        open_stream_key(planted, wrapped, context=BACKUP_CONTEXT)
    # The planted Secret is kept for review, never read as a keyring.
    (kept,) = _quarantine_of(kube, op_ns, tenant)
    assert base64.b64decode(kept["data"]["v1.key"]) == ATTACKER_KEY
    annotations = kept["metadata"]["annotations"]
    assert annotations["cleoai.io/quarantine-kind"] == "untrusted"
    assert "before the tenant had keys" in annotations["cleoai.io/quarantine-reason"]
    # The condition and a Warning Event tell the truth, with no key material.
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    condition = conditions["KeyringReady"]
    assert condition["status"] == "True"
    assert condition["reason"] == "UntrustedKeyringReplaced"
    assert f"{namespace}/{TENANT_KEYRING_SECRET}" in condition["message"]
    assert kept["metadata"]["name"] in condition["message"]
    assert obj["status"]["keyVersion"] == 1
    scanner = _assert_warned_without_keys(
        kube, namespace, "UntrustedKeyringReplaced", obj["status"], operator_keyring
    )
    scanner.assert_clean("the quarantine annotations", json.dumps(annotations))

    # A second reconcile writes no keys and keeps telling the truth.
    copy_rv = kube.get(SECRET, keyring_copy_name(tenant), namespace=op_ns)
    assert copy_rv is not None
    reconciler.reconcile(tenant)
    again = kube.get(TENANT, tenant)
    assert again is not None
    reasons = {c["type"]: c["reason"] for c in again["status"]["conditions"]}
    assert reasons["KeyringReady"] == "UntrustedKeyringReplaced"
    copy_after = kube.get(SECRET, keyring_copy_name(tenant), namespace=op_ns)
    assert copy_after is not None
    assert copy_after["metadata"]["resourceVersion"] == copy_rv["metadata"]["resourceVersion"]


def test_a_keyring_left_in_a_namespace_for_a_tenant_without_keys_is_not_imported(
    scene: Scene,
    tmp_path: Path,
    newcomer: str,
) -> None:
    """Finding 3 (B), at the reconciler: a namespace-scoped install's watched namespace, or a
    Retain orphan re-attached to a tenant of another name, holds a keyring its old admins
    wrote. A tenant whose status records no keys (`previous_status={}`) never imports it."""
    scene.write_as_attacker(_planted().to_secret_data())

    outcome = KeyringReconciler(scene.kube, scene.keys).reconcile(
        tenant=newcomer,
        namespace=scene.namespace,
        encryption=EncryptionSpec(),
        previous_status={},
        now=T0,
    )

    assert outcome.ready
    assert outcome.condition.reason == "UntrustedKeyringReplaced"
    assert outcome.warnings[0][0] == "UntrustedKeyringReplaced"
    fresh = copy_keyring(scene.kube, scene.operator_namespace, newcomer)
    assert fresh is not None
    assert all(k.material != ATTACKER_KEY for k in fresh.keys)
    assert scene.tenant_data() == fresh.to_secret_data()
    (kept,) = _quarantine_of(scene.kube, scene.operator_namespace, newcomer)
    assert base64.b64decode(kept["data"]["v1.key"]) == ATTACKER_KEY


def test_a_deleted_copy_is_recovered_from_the_tenant_secret_when_status_had_keys(
    kube: KubeClient,
    op_ns: str,
    operator_tenant: OperatorTenant,
) -> None:
    """The recovery path stays: someone with rights in the operator namespace deleted the copy;
    the tenant's status (which only the operator writes) says it had v1, so the tenant Secret
    is this tenant's keyring and becomes the copy again, unchanged and not quarantined."""
    tenant = new_name("twc")
    namespace = f"cleo-{tenant}"
    reconciler = operator_tenant(tenant, {"namespace": namespace})
    reconciler.reconcile(tenant)
    original = copy_keyring(kube, op_ns, tenant)
    assert original is not None
    obj = kube.get(TENANT, tenant)
    assert obj is not None
    assert obj["status"]["keyVersion"] == 1
    secret_before = read_secret(kube, namespace=namespace, name=TENANT_KEYRING_SECRET)
    assert secret_before is not None
    assert kube.delete(SECRET, keyring_copy_name(tenant), namespace=op_ns)

    reconciler.reconcile(tenant)

    assert copy_keyring(kube, op_ns, tenant) == original, "the tenant lost its keys"
    secret_after = read_secret(kube, namespace=namespace, name=TENANT_KEYRING_SECRET)
    assert secret_after is not None
    assert secret_after.resource_version == secret_before.resource_version
    assert _quarantine_of(kube, op_ns, tenant) == []
    obj = kube.get(TENANT, tenant)
    assert obj is not None
    reasons = {c["type"]: c["reason"] for c in obj["status"]["conditions"]}
    assert reasons["KeyringReady"] == "KeyringAvailable"


@pytest.mark.parametrize(
    "fault",
    [
        "keyring-tenant-quarantined",
        "keyring-generated",
        "keyring-copy-created",
        "keyring-tenant-updated",
    ],
)
def test_a_replacement_of_a_planted_keyring_killed_midway_never_imports_it(
    cluster: LocalCluster,
    scene: Scene,
    fault: str,
    newcomer: str,
) -> None:
    """Crash safety of the new path: killed after any write, the next run (status still
    without keys) finishes with the copy's keys in both homes, never the planted ones, and
    the planted Secret kept once; a copy made before the crash is the one kept."""
    scene.write_as_attacker(_planted().to_secret_data())

    def run(fault: str | None = None) -> Any:
        return keyring_process(
            cluster.env(),
            tenant=newcomer,
            namespace=scene.namespace,
            operator_namespace=scene.operator_namespace,
            now=T0,
            fault=fault,
        )

    killed = run(fault)
    assert killed.returncode == -9, f"not killed at {fault}: {killed.stderr}"
    at_crash = copy_keyring(scene.kube, scene.operator_namespace, newcomer)
    restarted = run()
    assert restarted.returncode == 0, restarted.stderr
    outcome = json.loads(restarted.stdout)
    assert outcome["condition"]["status"] == "True", outcome
    assert outcome["condition"]["reason"] == "UntrustedKeyringReplaced", outcome
    after = copy_keyring(scene.kube, scene.operator_namespace, newcomer)
    assert after is not None
    assert all(k.material != ATTACKER_KEY for k in after.keys)
    if at_crash is not None:
        assert after == at_crash, "the restart replaced the new keyring"
    assert scene.tenant_data() == after.to_secret_data()
    (kept,) = _quarantine_of(scene.kube, scene.operator_namespace, newcomer)
    assert base64.b64decode(kept["data"]["v1.key"]) == ATTACKER_KEY
    assert json.loads(run().stdout)["actions"] == []


def test_a_reviewed_untrusted_quarantine_is_adopted_only_on_request_and_loses_nothing(
    scene: Scene,
    newcomer: str,
) -> None:
    """The way back when the keyring found without keys WAS the tenant's (say, an older
    operator made it and the copy and status are gone): a person with rights in the operator
    namespace adopts it, explicitly; the new keyring it replaces is kept for review."""
    planted = _planted()
    scene.write_as_attacker(planted.to_secret_data())
    first = KeyringReconciler(scene.kube, scene.keys).reconcile(
        tenant=newcomer,
        namespace=scene.namespace,
        encryption=EncryptionSpec(),
        previous_status={},
        now=T0,
    )
    assert first.condition.reason == "UntrustedKeyringReplaced"
    fresh = copy_keyring(scene.kube, scene.operator_namespace, newcomer)
    assert fresh is not None
    (kept,) = _quarantine_of(scene.kube, scene.operator_namespace, newcomer)
    name = kept["metadata"]["name"]

    with pytest.raises(ValueError, match="--replace-new-keyring"):
        adopt_quarantined(scene.kube, scene.keys, tenant=newcomer, name=name)
    assert copy_keyring(scene.kube, scene.operator_namespace, newcomer) == fresh

    adopted, line = adopt_quarantined(
        scene.kube, scene.keys, tenant=newcomer, name=name, replace_new_keyring=True, now=T0
    )
    assert adopted == planted
    assert copy_keyring(scene.kube, scene.operator_namespace, newcomer) == planted
    (replaced,) = _quarantine_of(scene.kube, scene.operator_namespace, newcomer)
    assert replaced["metadata"]["name"] in line
    assert (
        Keyring.from_secret_data({k: base64.b64decode(v) for k, v in replaced["data"].items()})
        == fresh
    ), "the new keyring is kept, not thrown away"
    after = KeyringReconciler(scene.kube, scene.keys).reconcile(
        tenant=newcomer,
        namespace=scene.namespace,
        encryption=EncryptionSpec(),
        previous_status={"keyVersion": 1},
        now=T0,
    )
    assert after.ready
    assert scene.tenant_data() == planted.to_secret_data()

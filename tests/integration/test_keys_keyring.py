"""Tenant keyrings on a real API server: made once, kept in two homes, restored, rotated.

The reconcile runs in this process where the test needs to look inside, and as a separate
process where it must be SIGKILLed at a fault point; after each crash the next run must find
the key material that was there before (or, when the crash came before the first write,
make exactly one keyring).
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cleo_operator.api.tenant import EncryptionSpec
from cleo_operator.crypto import Envelope, Keyring, wrap_keyring
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.keys import (
    FAULT_POINTS,
    TENANT_KEYRING_SECRET,
    SecretKEKProvider,
    create_keyring_copy,
    create_secret,
    keyring_copy_name,
    read_keyring_copy,
    read_secret,
)
from cleo_operator.kube.kinds import NAMESPACE, SECRET
from cleo_operator.reconcile.keys import (
    KeyringOutcome,
    KeyringReconciler,
    OperatorKeys,
    ensure_operator_keys,
    keyring_labels,
    quarantine_selector,
)
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.integration.keys_harness import (
    SecretScanner,
    copy_keyring,
    copy_version,
    create_namespace,
    delete_namespace,
    events_text,
    keyring_process,
    keys_cli,
    resource_version,
    tenant_keyring,
)
from tests.integration.test_keys_operator import OPERATOR_FAULTS

# These tests run the reconcilers in processes of their own: no operator may race them.
pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("without_session_operator")]

T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


@dataclass
class Tenant:
    """One tenant of a test: its name, namespace and the operator's namespace and keys."""

    name: str
    namespace: str
    operator_namespace: str
    keys: OperatorKeys
    kube: KubeClient

    def reconcile(
        self,
        *,
        now: datetime.datetime = T0,
        period: str | None = None,
        previous: dict[str, Any] | None = None,
    ) -> KeyringOutcome:
        return KeyringReconciler(self.kube, self.keys).reconcile(
            tenant=self.name,
            namespace=self.namespace,
            encryption=EncryptionSpec(rotation_period=period),
            previous_status=previous or {},
            now=now,
        )

    def plant_copy(self, keyring: Keyring, *, wrapped_for: str | None = None) -> None:
        """Store `keyring` as this tenant's KEK-wrapped copy, wrapped for the tenant named
        `wrapped_for` (default: this one)."""
        create_keyring_copy(
            self.kube,
            operator_namespace=self.operator_namespace,
            tenant=self.name,
            wrapped=wrap_keyring(keyring, self.keys.kek.load(), tenant=wrapped_for or self.name),
            labels={},
        )

    def plant_secret(self, data: dict[str, bytes]) -> None:
        """Write the tenant keyring Secret with `data`, as someone other than the operator."""
        create_secret(
            self.kube,
            namespace=self.namespace,
            name=TENANT_KEYRING_SECRET,
            data=data,
            labels={},
        )

    def tenant_keyring(self) -> Keyring | None:
        return tenant_keyring(self.kube, self.namespace)

    def copy_keyring(self) -> Keyring | None:
        return copy_keyring(self.kube, self.operator_namespace, self.name)

    def versions(self) -> tuple[str | None, str | None]:
        """resourceVersions of (copy, tenant Secret): equal before and after = no writes."""
        return (
            copy_version(self.kube, self.operator_namespace, self.name),
            resource_version(self.kube, self.namespace, TENANT_KEYRING_SECRET),
        )


@pytest.fixture(scope="module")
def op_ns(kube: KubeClient) -> Iterator[str]:
    name = f"keys-kr-{uuid.uuid4().hex[:8]}"
    create_namespace(kube, name)
    ensure_operator_keys(kube, operator_namespace=name, kek_dir=None, now=T0)
    yield name
    delete_namespace(kube, name)


@pytest.fixture
def tenant(kube: KubeClient, op_ns: str) -> Iterator[Tenant]:
    name = f"t{uuid.uuid4().hex[:8]}"
    namespace = f"kr-{name}"
    create_namespace(kube, namespace)
    keys = OperatorKeys.locate(kube, operator_namespace=op_ns, kek_dir=None)
    yield Tenant(name, namespace, op_ns, keys, kube)
    delete_namespace(kube, namespace)


@pytest.fixture
def env(cluster: LocalCluster) -> dict[str, str]:
    return cluster.env()


# -- one keyring, two homes -------------------------------------------------------------------


def test_a_new_tenant_gets_one_keyring_in_both_homes(tenant: Tenant) -> None:
    outcome = tenant.reconcile()

    assert outcome.ready, outcome.condition
    keyring = tenant.tenant_keyring()
    assert keyring is not None
    assert tenant.copy_keyring() == keyring
    assert [k.version for k in keyring.keys] == [1]
    assert outcome.status == {"keyVersion": 1, "lastRotation": "2030-01-01T12:00:00Z"}
    assert outcome.fingerprint == keyring.fingerprint()
    assert outcome.requeue_after is None
    assert len(outcome.actions) == 2
    copy = read_keyring_copy(
        tenant.kube, operator_namespace=tenant.operator_namespace, tenant=tenant.name
    )
    live = read_secret(tenant.kube, namespace=tenant.namespace, name=TENANT_KEYRING_SECRET)
    assert copy is not None
    assert live is not None
    assert copy.secret.labels == live.labels == keyring_labels(tenant.name)
    assert live.labels["app.kubernetes.io/component"] == "keyring"

    # A second reconcile changes nothing and writes nothing.
    versions = tenant.versions()
    again = tenant.reconcile(now=T0 + 10 * HOUR)
    assert again.ready
    assert again.actions == ()
    assert again.fingerprint == outcome.fingerprint
    assert tenant.versions() == versions


def test_a_tenant_secret_without_a_copy_is_copied_never_replaced(tenant: Tenant) -> None:
    """The copy was deleted, but this tenant's status says it had keys (v2): the recovery."""
    existing = Keyring.generate(T0 - 100 * HOUR).rotate(T0 - HOUR)
    tenant.plant_secret(existing.to_secret_data())
    before = resource_version(tenant.kube, tenant.namespace, TENANT_KEYRING_SECRET)

    outcome = tenant.reconcile(previous={"keyVersion": 2})

    assert outcome.ready, outcome.condition
    assert tenant.copy_keyring() == existing
    assert tenant.tenant_keyring() == existing
    assert resource_version(tenant.kube, tenant.namespace, TENANT_KEYRING_SECRET) == before
    assert outcome.status["keyVersion"] == 2
    assert any("copied the existing keyring Secret" in a for a in outcome.actions)


def test_a_deleted_namespace_gets_the_same_keyring_back(tenant: Tenant) -> None:
    assert tenant.reconcile().ready
    original = tenant.tenant_keyring()
    assert original is not None

    delete_namespace(tenant.kube, tenant.namespace)
    while_gone = wait_for(
        lambda: (o := tenant.reconcile()).condition.reason == "NamespaceNotReady" and o,
        timeout=60,
        what="the keyring reconcile to see the namespace going",
    )
    assert not while_gone.ready
    assert while_gone.requeue_after == 2.0
    assert f"{tenant.namespace}/{TENANT_KEYRING_SECRET}" in while_gone.condition.message
    wait_for(
        lambda: tenant.kube.get(NAMESPACE, tenant.namespace) is None,
        timeout=90,
        what="the tenant namespace to be gone",
    )
    create_namespace(tenant.kube, tenant.namespace)

    restored = tenant.reconcile()

    assert restored.ready, restored.condition
    assert tenant.tenant_keyring() == original
    assert restored.fingerprint == original.fingerprint()


def test_a_keyring_whose_homes_are_both_gone_is_not_regenerated(tenant: Tenant) -> None:
    outcome = tenant.reconcile(previous={"keyVersion": 3, "lastRotation": "2029-12-01T00:00:00Z"})

    assert outcome.condition.reason == "KeyringLost"
    assert "restore the copy" in outcome.condition.message
    assert "status.keyVersion" in outcome.condition.message
    # The status fields are carried over, so the next run still knows a keyring existed.
    assert outcome.status == {"keyVersion": 3, "lastRotation": "2029-12-01T00:00:00Z"}
    assert tenant.versions() == (None, None)


def _quarantined(t: Tenant) -> list[dict[str, Any]]:
    """The quarantine Secrets of this tenant in the operator namespace."""
    return t.kube.list(
        SECRET,
        namespace=t.operator_namespace,
        label_selector=quarantine_selector(t.name),
    )


# Before issue 11 this test asserted that two homes with different keys for one version were
# left alone (KeyringConflict). The copy is now the only truth: the tenant Secret is repaired.
def test_homes_that_disagree_are_repaired_from_the_copy(tenant: Tenant) -> None:
    mine, other = Keyring.generate(T0), Keyring.generate(T0)
    tenant.plant_copy(mine)
    tenant.plant_secret(other.to_secret_data())
    copy_version_before = tenant.versions()[0]

    outcome = tenant.reconcile(previous={"keyVersion": 1})

    assert outcome.ready
    assert outcome.condition.reason == "TenantKeyringRepaired"
    assert "a different key for v1" in outcome.condition.message
    assert outcome.fingerprint == mine.fingerprint()
    assert tenant.tenant_keyring() == mine
    assert tenant.versions()[0] == copy_version_before, "the copy is never written"
    (kept,) = _quarantined(tenant)
    assert (
        Keyring.from_secret_data({k: base64.b64decode(v) for k, v in kept["data"].items()}) == other
    ), "what the tenant Secret held is kept for review"


# Before issue 11 this test asserted the opposite: a copy behind the tenant Secret (an
# operator namespace restored from an old backup) was brought up to the tenant Secret. A
# tenant admin can write that Secret, so its extra version is now quarantined instead.
def test_a_tenant_secret_ahead_of_the_copy_is_quarantined_not_imported(tenant: Tenant) -> None:
    old = Keyring.generate(T0)
    new = old.rotate(T0 + HOUR)
    tenant.plant_copy(old)
    tenant.plant_secret(new.to_secret_data())
    copy_version_before = tenant.versions()[0]

    outcome = tenant.reconcile(now=T0 + 2 * HOUR)

    assert outcome.ready
    assert outcome.condition.reason == "TenantKeyringRepaired"
    assert outcome.status["keyVersion"] == 1
    assert tenant.copy_keyring() == old
    assert tenant.versions()[0] == copy_version_before
    assert tenant.tenant_keyring() == old
    (kept,) = _quarantined(tenant)
    assert (
        "v2 that the copy does not"
        in kept["metadata"]["annotations"]["cleoai.io/quarantine-reason"]
    )
    # The report stays until a person deletes the quarantine Secret; then it clears.
    versions = tenant.versions()
    again = tenant.reconcile(now=T0 + 2 * HOUR)
    assert again.condition.reason == "TenantKeyringRepaired"
    assert kept["metadata"]["name"] in again.condition.message
    assert again.actions == ()
    assert tenant.versions() == versions
    tenant.kube.delete(SECRET, kept["metadata"]["name"], namespace=tenant.operator_namespace)
    assert tenant.reconcile(now=T0 + 2 * HOUR).condition.reason == "KeyringAvailable"


def test_an_operator_namespace_restored_from_an_old_backup_is_recovered_by_a_person(
    env: dict[str, str], tenant: Tenant
) -> None:
    """The case the old "copy brought up to the tenant Secret" handled, now done by a person:
    the copy lacks v2, the reconcile quarantines the tenant Secret's v2, a person reviews it
    and runs `keys adopt-quarantined`; the next reconcile gives the tenant Secret v2 back."""
    old = Keyring.generate(T0)
    new = old.rotate(T0 + HOUR)
    tenant.plant_copy(old)
    tenant.plant_secret(new.to_secret_data())
    assert tenant.reconcile(now=T0 + 2 * HOUR).condition.reason == "TenantKeyringRepaired"
    (kept,) = _quarantined(tenant)
    name = kept["metadata"]["name"]
    # `keys status` lists it, with the command that adopts it.
    status = keys_cli(
        env, "keys", "status", "--operator-namespace", tenant.operator_namespace
    ).stdout
    # (Other tests of the module share the operator namespace: count only this one.)
    assert "keyring quarantines to review: " in status
    assert f"  {name}: tenant {tenant.name}, from " in status
    assert (
        f"adopt: cleo-operator keys adopt-quarantined --tenant {tenant.name} --secret {name};"
        in status
    )

    wrong = keys_cli(
        env,
        "keys",
        "adopt-quarantined",
        "--tenant",
        "someone-else",
        "--secret",
        name,
        "--operator-namespace",
        tenant.operator_namespace,
    )
    assert wrong.returncode == 1
    assert "not a keyring quarantine Secret of tenant someone-else" in wrong.stderr
    adopted = keys_cli(
        env,
        "keys",
        "adopt-quarantined",
        "--tenant",
        tenant.name,
        "--secret",
        name,
        "--operator-namespace",
        tenant.operator_namespace,
    )
    assert adopted.returncode == 0, adopted.stderr
    assert "now holds versions v1, v2 (active v2)" in adopted.stdout
    assert tenant.copy_keyring() == new
    assert _quarantined(tenant) == []
    status = keys_cli(
        env, "keys", "status", "--operator-namespace", tenant.operator_namespace
    ).stdout
    assert name not in status

    outcome = tenant.reconcile(now=T0 + 2 * HOUR)
    assert outcome.condition.reason == "TenantKeyringRepaired", "it lacked v2: repaired"
    assert tenant.tenant_keyring() == new
    assert tenant.reconcile(now=T0 + 2 * HOUR).condition.reason == "KeyringAvailable"


def test_a_quarantined_keyring_that_would_lose_a_key_is_not_adopted(
    env: dict[str, str], tenant: Tenant
) -> None:
    assert tenant.reconcile().ready
    copy = tenant.copy_keyring()
    other = Keyring.generate(T0)
    tenant.kube.patch_merge(
        SECRET,
        TENANT_KEYRING_SECRET,
        {"data": {k: base64.b64encode(v).decode() for k, v in other.to_secret_data().items()}},
        namespace=tenant.namespace,
    )
    assert tenant.reconcile().condition.reason == "TenantKeyringRepaired"
    (kept,) = _quarantined(tenant)
    versions = tenant.versions()

    refused = keys_cli(
        env,
        "keys",
        "adopt-quarantined",
        "--tenant",
        tenant.name,
        "--secret",
        kept["metadata"]["name"],
        "--operator-namespace",
        tenant.operator_namespace,
    )

    assert refused.returncode == 1
    assert "would lose key material" in refused.stderr
    assert tenant.versions() == versions
    assert tenant.copy_keyring() == copy


def test_a_damaged_tenant_secret_is_repaired_from_the_copy(tenant: Tenant) -> None:
    assert tenant.reconcile().ready
    original = tenant.tenant_keyring()
    live = read_secret(tenant.kube, namespace=tenant.namespace, name=TENANT_KEYRING_SECRET)
    assert live is not None
    damaged = {k: v for k, v in live.data.items() if k != "v1.key"}
    tenant.kube.request(
        "PUT",
        f"/api/v1/namespaces/{tenant.namespace}/secrets/{TENANT_KEYRING_SECRET}",
        body={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": TENANT_KEYRING_SECRET, "namespace": tenant.namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in damaged.items()},
        },
    )

    outcome = tenant.reconcile(previous={"keyVersion": 1})

    assert outcome.condition.reason == "TenantKeyringRepaired"
    assert "cannot be read as a keyring" in outcome.condition.message
    assert "data['v1.key']" in outcome.condition.message
    assert tenant.tenant_keyring() == original
    assert len(_quarantined(tenant)) == 1


def test_a_damaged_tenant_secret_without_a_copy_is_reported_not_replaced(
    tenant: Tenant,
) -> None:
    tenant.plant_secret({"keyring.json": b"not a keyring"})
    versions = tenant.versions()

    outcome = tenant.reconcile(previous={"keyVersion": 1})

    assert outcome.condition.reason == "KeyringSecretInvalid"
    assert "no KEK-wrapped copy" in outcome.condition.message
    assert tenant.versions() == versions


@pytest.mark.security
def test_a_copy_renamed_to_another_tenant_does_not_open(tenant: Tenant, op_ns: str) -> None:
    victim = Keyring.generate(T0)
    # The copy of tenant "victim", stored under this tenant's name.
    tenant.plant_copy(victim, wrapped_for="victim")

    outcome = tenant.reconcile()

    assert outcome.condition.reason == "KeyringCopyUnreadable"
    assert "WrongContext" in outcome.condition.message
    assert keyring_copy_name(tenant.name) in outcome.condition.message
    assert tenant.tenant_keyring() is None, "never restore another tenant's keyring"


# -- rotation --------------------------------------------------------------------------------


def test_the_keyring_rotates_on_its_timer_and_keeps_old_versions(tenant: Tenant) -> None:
    created = tenant.reconcile(period="1h")
    assert created.status == {
        "keyVersion": 1,
        "lastRotation": "2030-01-01T12:00:00Z",
        "nextRotation": "2030-01-01T13:00:00Z",
    }
    assert created.requeue_after == 3600
    v1 = tenant.tenant_keyring()
    assert v1 is not None

    versions = tenant.versions()
    early = tenant.reconcile(period="1h", now=T0 + HOUR / 2)
    assert early.requeue_after == 1800
    assert early.actions == ()
    assert tenant.versions() == versions

    rotated = tenant.reconcile(period="1h", now=T0 + 61 * datetime.timedelta(minutes=1))

    assert rotated.ready
    keyring = tenant.tenant_keyring()
    assert keyring is not None
    assert tenant.copy_keyring() == keyring
    assert [k.version for k in keyring.keys] == [1, 2]
    assert keyring.active_version == 2
    assert keyring.keys[0] == v1.keys[0], "v1 is kept, unchanged"
    assert rotated.status == {
        "keyVersion": 2,
        "lastRotation": "2030-01-01T13:01:00Z",
        "nextRotation": "2030-01-01T14:01:00Z",
    }
    assert rotated.requeue_after == 3600
    assert rotated.fingerprint != created.fingerprint, "the pods must roll onto the new key"
    # Data encrypted before the rotation still decrypts.
    context = {"tenant": tenant.name, "purpose": "memory"}
    assert keyring.decrypt(v1.encrypt(b"old memory", context=context), context=context) == (
        b"old memory"
    )


def test_rotate_kek_rewraps_every_copy_and_old_wrapped_data_still_opens(
    kube: KubeClient, env: dict[str, str], op_ns: str, tenant: Tenant
) -> None:
    assert tenant.reconcile().ready
    keyring = tenant.tenant_keyring()
    kek_v1 = tenant.keys.kek.load()
    other_wrapped = kek_v1.wrap(b"d" * 32, context={"tenant": tenant.name, "backup": "b1"})
    tenant_version = tenant.versions()[1]

    result = keys_cli(env, "keys", "rotate-kek", "--operator-namespace", op_ns)

    assert result.returncode == 0, result.stderr
    assert "KEK v2 is current" in result.stdout
    assert tenant.name in result.stdout
    kek = tenant.keys.kek.load()
    assert kek.versions == (1, 2)
    copy = read_keyring_copy(kube, operator_namespace=op_ns, tenant=tenant.name)
    assert copy is not None
    assert Envelope.from_text(copy.wrapped).key_id == "v2"
    assert tenant.copy_keyring() == keyring
    assert tenant.versions()[1] == tenant_version, "the tenant Secret is not touched"
    assert kek.unwrap(other_wrapped, context={"tenant": tenant.name, "backup": "b1"}) == b"d" * 32
    status = keys_cli(env, "keys", "status", "--operator-namespace", op_ns)
    assert f"{tenant.name}: wrapped by KEK v2\n" in status.stdout + "\n"
    # Nothing is left to re-wrap.
    again = keys_cli(env, "keys", "rewrap", "--operator-namespace", op_ns)
    assert "re-wrapped 0 keyring copies" in again.stdout


# -- crashes at every fault point -------------------------------------------------------------


def _seed_kek_rotated(t: Tenant) -> None:
    assert t.reconcile().ready
    provider = t.keys.kek
    assert isinstance(provider, SecretKEKProvider)
    provider.rotate()


def _seed_rotation_due(t: Tenant) -> None:
    assert t.reconcile(period="1h").ready


def _seed_tenant_secret(t: Tenant) -> None:
    t.plant_secret(Keyring.generate(T0).to_secret_data())


def _seed_copy_ahead(t: Tenant) -> None:
    old = Keyring.generate(T0)
    t.plant_secret(old.to_secret_data())
    t.plant_copy(old.rotate(T0 + HOUR))


def _seed_tenant_ahead(t: Tenant) -> None:
    old = Keyring.generate(T0)
    t.plant_secret(old.rotate(T0 + HOUR).to_secret_data())
    t.plant_copy(old)


@dataclass(frozen=True)
class Crash:
    """Where to kill the keyring reconcile, how to get there, and what the crash leaves."""

    seed: Callable[[Tenant], None] | None
    """What exists before the killed run."""
    wrote_copy: bool
    """Whether the copy exists after the crash."""
    wrote_tenant: bool
    """Whether the tenant Secret exists after the crash."""
    now: datetime.datetime = T0
    period: str | None = None
    key_version: int | None = None
    """The tenant's status.keyVersion before the killed run (None: it never had keys)."""


KEYRING_CRASHES = {
    "keyring-generated": Crash(None, wrote_copy=False, wrote_tenant=False),
    "keyring-copy-created": Crash(None, wrote_copy=True, wrote_tenant=False),
    "keyring-tenant-created": Crash(None, wrote_copy=True, wrote_tenant=True),
    "keyring-copy-adopted": Crash(
        _seed_tenant_secret, wrote_copy=True, wrote_tenant=True, key_version=1
    ),
    "keyring-tenant-updated": Crash(_seed_copy_ahead, wrote_copy=True, wrote_tenant=True),
    "keyring-tenant-quarantined": Crash(_seed_tenant_ahead, wrote_copy=True, wrote_tenant=True),
    "keyring-copy-rewrapped": Crash(_seed_kek_rotated, wrote_copy=True, wrote_tenant=True),
    "keyring-rotation-copy-written": Crash(
        _seed_rotation_due, wrote_copy=True, wrote_tenant=True, now=T0 + 2 * HOUR, period="1h"
    ),
    "keyring-rotation-tenant-written": Crash(
        _seed_rotation_due, wrote_copy=True, wrote_tenant=True, now=T0 + 2 * HOUR, period="1h"
    ),
}


def test_every_fault_point_has_a_crash_test() -> None:
    tested = set(KEYRING_CRASHES) | set(OPERATOR_FAULTS) | {"kek-rotated", "sealing-keys-rotated"}
    assert tested == set(FAULT_POINTS)


@pytest.mark.parametrize("fault", sorted(KEYRING_CRASHES))
def test_a_reconcile_killed_at_a_fault_point_never_makes_a_second_keyring(
    env: dict[str, str], tenant: Tenant, fault: str
) -> None:
    crash = KEYRING_CRASHES[fault]
    if crash.seed is not None:
        crash.seed(tenant)

    def run(fault: str | None = None) -> Any:
        return keyring_process(
            env,
            tenant=tenant.name,
            namespace=tenant.namespace,
            operator_namespace=tenant.operator_namespace,
            rotation_period=crash.period,
            now=crash.now,
            fault=fault,
            key_version=crash.key_version,
        )

    killed = run(fault)
    assert killed.returncode == -9, f"not killed at {fault}: {killed.stdout}{killed.stderr}"
    assert f"fault point {fault} reached" in killed.stderr
    copy_at_crash, tenant_at_crash = tenant.copy_keyring(), tenant.tenant_keyring()
    assert (copy_at_crash is not None) == crash.wrote_copy
    assert (tenant_at_crash is not None) == crash.wrote_tenant

    restarted = run()
    assert restarted.returncode == 0, restarted.stderr
    outcome = json.loads(restarted.stdout)
    assert outcome["condition"]["status"] == "True", outcome

    after = tenant.copy_keyring()
    assert after is not None
    assert tenant.tenant_keyring() == after
    assert outcome["fingerprint"] == after.fingerprint()
    if copy_at_crash is not None:
        # The copy is the source of truth: whatever it held at the crash is what both hold.
        assert after == copy_at_crash, "the restart replaced key material"
    else:
        assert [k.version for k in after.keys] == [1]
    if fault.startswith("keyring-rotation"):
        assert [k.version for k in after.keys] == [1, 2], "one rotation, not two"
    # And a third run has nothing left to do.
    versions = tenant.versions()
    third = run()
    assert json.loads(third.stdout)["actions"] == []
    assert tenant.versions() == versions


def test_kek_rotation_killed_before_rewrapping_is_finished_by_rewrap(
    env: dict[str, str], op_ns: str, tenant: Tenant
) -> None:
    assert tenant.reconcile().ready
    keyring = tenant.copy_keyring()

    killed = keys_cli(env, "keys", "rotate-kek", "--operator-namespace", op_ns, fault="kek-rotated")
    assert killed.returncode == -9, killed.stderr
    kek = tenant.keys.kek.load()
    copy = read_keyring_copy(tenant.kube, operator_namespace=op_ns, tenant=tenant.name)
    assert copy is not None
    assert kek.needs_rewrap(copy.wrapped)
    assert tenant.copy_keyring() == keyring, "an old KEK version still opens the copy"

    finished = keys_cli(env, "keys", "rewrap", "--operator-namespace", op_ns)
    assert finished.returncode == 0, finished.stderr
    copy = read_keyring_copy(tenant.kube, operator_namespace=op_ns, tenant=tenant.name)
    assert copy is not None
    assert not tenant.keys.kek.load().needs_rewrap(copy.wrapped)
    assert tenant.copy_keyring() == keyring


def test_no_key_material_in_logs_or_events(
    caplog: pytest.LogCaptureFixture, tenant: Tenant
) -> None:
    caplog.set_level("DEBUG")
    tenant.reconcile(period="1h")
    tenant.reconcile(period="1h", now=T0 + 2 * HOUR)
    scanner = SecretScanner()
    scanner.add_cluster_keys(tenant.kube, tenant.operator_namespace, [tenant.namespace])
    keyring = tenant.tenant_keyring()
    assert keyring is not None
    assert len(keyring.keys) == 2
    assert scanner.find(keyring.keys[1].material.hex())
    assert "rotated the keyring" in caplog.text
    scanner.assert_clean("the log", caplog.text)
    scanner.assert_clean(
        "Events", events_text(tenant.kube, [tenant.namespace, tenant.operator_namespace])
    )

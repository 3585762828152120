"""The operator's own keys on a real API server: the KEK Secret and the sealing keys.

Created once (also by racing processes), never overwritten or regenerated, rotated by adding
versions with optimistic concurrency, and crash-safe at every fault point of their writes.
"""

from __future__ import annotations

import datetime
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleo_operator.crypto import (
    FileKEKProvider,
    InvalidKeyMaterial,
    KeyEncryptionKeys,
    SealingKeyring,
    SealingPublicKey,
    kek_from_secret_data,
    kek_to_secret_data,
    seal,
    unseal,
)
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.keys import (
    KEK_SECRET,
    SEALING_PUBLIC_CONFIG_MAP,
    SEALING_SECRET,
    SealingKeyStore,
    SecretKEKProvider,
    create_secret,
    read_secret,
    update_secret,
)
from cleo_operator.kube.kinds import CONFIG_MAP
from cleo_operator.reconcile.keys import ensure_operator_keys
from e2e.cluster import LocalCluster
from tests.integration.keys_harness import (
    SecretScanner,
    create_namespace,
    delete_namespace,
    keys_cli,
)

# These tests run the reconcilers in processes of their own: no operator may race them.
pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("without_session_operator")]

NOW = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def op_ns(kube: KubeClient) -> Iterator[str]:
    """A fresh operator namespace for one test."""
    name = f"keys-op-{uuid.uuid4().hex[:8]}"
    create_namespace(kube, name)
    yield name
    delete_namespace(kube, name)


@pytest.fixture
def env(cluster: LocalCluster) -> dict[str, str]:
    return cluster.env()


def kek_data(kube: KubeClient, namespace: str) -> dict[str, bytes] | None:
    stored = read_secret(kube, namespace=namespace, name=KEK_SECRET)
    return None if stored is None else dict(stored.data)


def sealing_data(kube: KubeClient, namespace: str) -> dict[str, bytes] | None:
    stored = read_secret(kube, namespace=namespace, name=SEALING_SECRET)
    return None if stored is None else dict(stored.data)


def published_text(kube: KubeClient, namespace: str) -> str | None:
    live = kube.get(CONFIG_MAP, SEALING_PUBLIC_CONFIG_MAP, namespace=namespace)
    return None if live is None else str(live["data"]["public-key.txt"]).strip()


# -- created once ------------------------------------------------------------------------------


def test_keys_are_created_on_first_start_and_reused_across_restarts(
    kube: KubeClient, env: dict[str, str], op_ns: str
) -> None:
    first = keys_cli(env, "keys", "init", "--operator-namespace", op_ns)
    assert first.returncode == 0, first.stderr
    kek_secret = read_secret(kube, namespace=op_ns, name=KEK_SECRET)
    sealing_secret = read_secret(kube, namespace=op_ns, name=SEALING_SECRET)
    assert kek_secret is not None
    assert sealing_secret is not None
    assert kek_from_secret_data(kek_secret.data).versions == (1,)
    assert kek_secret.labels == {
        "app.kubernetes.io/managed-by": "cleo-operator",
        "app.kubernetes.io/component": "keys",
    }
    public = SealingKeyring.from_secret_data(sealing_secret.data).public_key
    assert first.stdout.strip() == public.to_text() == published_text(kube, op_ns)

    published = kube.get(CONFIG_MAP, SEALING_PUBLIC_CONFIG_MAP, namespace=op_ns)
    assert published is not None

    # A restart (a new process) reads the same keys and writes nothing at all.
    second = keys_cli(env, "keys", "init", "--operator-namespace", op_ns)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    again_kek = read_secret(kube, namespace=op_ns, name=KEK_SECRET)
    again_sealing = read_secret(kube, namespace=op_ns, name=SEALING_SECRET)
    assert again_kek is not None
    assert again_sealing is not None
    assert again_kek.resource_version == kek_secret.resource_version
    assert again_sealing.resource_version == sealing_secret.resource_version
    assert dict(again_kek.data) == dict(kek_secret.data)
    again_published = kube.get(CONFIG_MAP, SEALING_PUBLIC_CONFIG_MAP, namespace=op_ns)
    assert again_published is not None
    assert (
        again_published["metadata"]["resourceVersion"] == published["metadata"]["resourceVersion"]
    )


def test_racing_first_starts_agree_on_one_kek_and_one_sealing_keyring(
    kube: KubeClient, op_ns: str
) -> None:
    results: list[tuple[bytes, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        try:
            barrier.wait()
            keys = ensure_operator_keys(kube, operator_namespace=op_ns, kek_dir=None, now=NOW)
            kek = keys.kek.load()
            results.append((kek.keys[-1][1], keys.sealing.load().public_key.key_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 6
    assert len(set(results)) == 1, "racing starts must all use the one keyring that won"
    stored = kek_data(kube, op_ns)
    assert stored is not None
    assert kek_from_secret_data(stored).keys[-1][1] == results[0][0]


def test_an_existing_kek_secret_is_used_never_overwritten(kube: KubeClient, op_ns: str) -> None:
    mine = KeyEncryptionKeys.generate().rotate()
    create_secret(kube, namespace=op_ns, name=KEK_SECRET, data=kek_to_secret_data(mine), labels={})
    before = read_secret(kube, namespace=op_ns, name=KEK_SECRET)
    assert before is not None

    keks = SecretKEKProvider(kube, op_ns).ensure()

    assert keks == mine
    after = read_secret(kube, namespace=op_ns, name=KEK_SECRET)
    assert after is not None
    assert after.resource_version == before.resource_version


def test_a_damaged_kek_secret_is_reported_never_replaced(kube: KubeClient, op_ns: str) -> None:
    create_secret(kube, namespace=op_ns, name=KEK_SECRET, data={"v1": b"short"}, labels={})
    before = read_secret(kube, namespace=op_ns, name=KEK_SECRET)
    assert before is not None

    with pytest.raises(InvalidKeyMaterial) as caught:
        ensure_operator_keys(kube, operator_namespace=op_ns, kek_dir=None, now=NOW)

    assert f"KEK Secret {op_ns}/{KEK_SECRET}" in str(caught.value)
    assert "'v1'" in str(caught.value)
    after = read_secret(kube, namespace=op_ns, name=KEK_SECRET)
    assert after is not None
    assert after.resource_version == before.resource_version
    # Nothing else was created while the KEK was unusable.
    assert read_secret(kube, namespace=op_ns, name=SEALING_SECRET) is None


def test_a_missing_operator_namespace_is_an_error_not_a_silent_skip(kube: KubeClient) -> None:
    with pytest.raises(KubeError) as caught:
        ensure_operator_keys(
            kube, operator_namespace=f"absent-{uuid.uuid4().hex[:8]}", kek_dir=None, now=NOW
        )
    assert caught.value.not_found


def test_kek_directory_replaces_the_kek_secret(
    kube: KubeClient, env: dict[str, str], op_ns: str, tmp_path: Path
) -> None:
    keks = KeyEncryptionKeys.generate()
    for name, key in kek_to_secret_data(keks).items():
        (tmp_path / name).write_bytes(key)

    result = keys_cli(
        {**env, "CLEO_KEK_DIR": str(tmp_path)}, "keys", "init", "--operator-namespace", op_ns
    )
    assert result.returncode == 0, result.stderr
    assert kek_data(kube, op_ns) is None, "with CLEO_KEK_DIR no KEK Secret is made"
    status = keys_cli(
        {**env, "CLEO_KEK_DIR": str(tmp_path)}, "keys", "status", "--operator-namespace", op_ns
    )
    assert status.returncode == 0, status.stderr
    assert f"KEKs: directory {tmp_path}: versions v1, current v1" in status.stdout

    # rotate-kek cannot add a version to a directory the KMS owns, and says what to do.
    rotate = keys_cli(
        {**env, "CLEO_KEK_DIR": str(tmp_path)}, "keys", "rotate-kek", "--operator-namespace", op_ns
    )
    assert rotate.returncode == 1
    assert "add the new version there" in rotate.stderr
    assert FileKEKProvider(tmp_path).load() == keks

    empty = tmp_path / "empty"
    empty.mkdir()
    broken = keys_cli(
        {**env, "CLEO_KEK_DIR": str(empty)}, "keys", "init", "--operator-namespace", op_ns
    )
    assert broken.returncode == 1
    assert "holds no KEK" in broken.stderr


# -- rotation --------------------------------------------------------------------------------


def test_kek_rotation_adds_a_version_and_refuses_a_stale_writer(
    kube: KubeClient, op_ns: str
) -> None:
    provider = SecretKEKProvider(kube, op_ns)
    original = provider.ensure()
    stale = read_secret(kube, namespace=op_ns, name=KEK_SECRET)
    assert stale is not None
    wrapped = original.wrap(b"k" * 32, context={"tenant": "t", "purpose": "test"})

    rotated = provider.rotate()

    assert rotated.versions == (1, 2)
    assert rotated.keys[0] == original.keys[0], "v1 must be kept as it was"
    assert provider.load() == rotated
    assert provider.load().unwrap(wrapped, context={"tenant": "t", "purpose": "test"}) == (
        b"k" * 32
    )
    # A writer that read before the rotation cannot drop v2 by writing its stale view.
    with pytest.raises(KubeError) as caught:
        update_secret(kube, stale, kek_to_secret_data(original.rotate()))
    assert caught.value.conflict
    assert provider.load() == rotated


def test_public_key_commands_and_sealing_rotation(
    kube: KubeClient, env: dict[str, str], op_ns: str
) -> None:
    assert keys_cli(env, "keys", "init", "--operator-namespace", op_ns).returncode == 0
    text = keys_cli(env, "keys", "public", "--operator-namespace", op_ns)
    pem = keys_cli(env, "keys", "public", "--pem", "--operator-namespace", op_ns)
    assert text.returncode == 0, text.stderr
    assert pem.returncode == 0, pem.stderr
    first = SealingPublicKey.from_text(text.stdout)
    assert SealingPublicKey.from_pem(pem.stdout) == first
    sealed_before = seal(first, tenant="acme", secret="api", key="TOKEN", plaintext=b"v1-value")

    rotated = keys_cli(env, "keys", "rotate-sealing", "--operator-namespace", op_ns)
    assert rotated.returncode == 0, rotated.stderr
    second = SealingPublicKey.from_text(rotated.stdout)
    assert second != first
    assert keys_cli(env, "keys", "public", "--operator-namespace", op_ns).stdout.strip() == (
        second.to_text()
    )
    assert published_text(kube, op_ns) == second.to_text()

    keyring = SealingKeyStore(kube, op_ns).load()
    assert [k.version for k in keyring.keys] == [1, 2]
    assert keyring.current_version == 2
    # What was sealed before the rotation still opens; new values use the new key.
    assert unseal(keyring, sealed_before, tenant="acme", secret="api", key="TOKEN") == b"v1-value"
    sealed_after = seal(second, tenant="acme", secret="api", key="TOKEN", plaintext=b"v2-value")
    assert unseal(keyring, sealed_after, tenant="acme", secret="api", key="TOKEN") == b"v2-value"


def test_public_key_without_keys_says_what_to_do(env: dict[str, str], op_ns: str) -> None:
    result = keys_cli(env, "keys", "public", "--operator-namespace", op_ns)
    assert result.returncode == 1
    assert "keys init" in result.stderr
    assert result.stdout == ""


# -- crashes ---------------------------------------------------------------------------------

OPERATOR_FAULTS = [
    "kek-generated",
    "kek-created",
    "sealing-keys-generated",
    "sealing-keys-created",
]


@pytest.mark.parametrize("fault", OPERATOR_FAULTS)
def test_first_start_killed_at_a_fault_point_keeps_or_makes_exactly_one_set_of_keys(
    kube: KubeClient, env: dict[str, str], op_ns: str, fault: str
) -> None:
    killed = keys_cli(env, "keys", "init", "--operator-namespace", op_ns, fault=fault)
    assert killed.returncode == -9, f"not killed at {fault}: {killed.stderr}"
    kek_at_crash = kek_data(kube, op_ns)
    sealing_at_crash = sealing_data(kube, op_ns)
    assert (kek_at_crash is None) == (fault == "kek-generated")
    assert (sealing_at_crash is None) == fault.startswith(("kek-", "sealing-keys-generated"))

    restarted = keys_cli(env, "keys", "init", "--operator-namespace", op_ns)
    assert restarted.returncode == 0, restarted.stderr

    kek_after, sealing_after = kek_data(kube, op_ns), sealing_data(kube, op_ns)
    assert kek_after is not None
    assert sealing_after is not None
    assert kek_from_secret_data(kek_after).versions == (1,)
    assert [k.version for k in SealingKeyring.from_secret_data(sealing_after).keys] == [1]
    # What existed at the crash is what exists now: nothing was regenerated.
    if kek_at_crash is not None:
        assert kek_after == kek_at_crash
    if sealing_at_crash is not None:
        assert sealing_after == sealing_at_crash
    public = SealingKeyring.from_secret_data(sealing_after).public_key.to_text()
    assert published_text(kube, op_ns) == public == restarted.stdout.strip()


def test_sealing_rotation_killed_before_publishing_is_published_on_restart(
    kube: KubeClient, env: dict[str, str], op_ns: str
) -> None:
    assert keys_cli(env, "keys", "init", "--operator-namespace", op_ns).returncode == 0
    old_public = published_text(kube, op_ns)

    killed = keys_cli(
        env, "keys", "rotate-sealing", "--operator-namespace", op_ns, fault="sealing-keys-rotated"
    )
    assert killed.returncode == -9, killed.stderr
    at_crash = sealing_data(kube, op_ns)
    assert at_crash is not None
    keyring = SealingKeyring.from_secret_data(at_crash)
    assert keyring.current_version == 2
    # The ConfigMap still shows the old key: sealing to it keeps working meanwhile.
    assert published_text(kube, op_ns) == old_public

    restarted = keys_cli(env, "keys", "init", "--operator-namespace", op_ns)
    assert restarted.returncode == 0, restarted.stderr
    assert sealing_data(kube, op_ns) == at_crash
    assert published_text(kube, op_ns) == keyring.public_key.to_text()


def test_no_key_material_in_command_output(
    kube: KubeClient, env: dict[str, str], op_ns: str
) -> None:
    outputs = [
        keys_cli(env, "--log-level", "DEBUG", "keys", command, "--operator-namespace", op_ns)
        for command in ("init", "rotate-sealing", "rotate-kek", "rewrap", "status", "public")
    ]
    assert all(result.returncode == 0 for result in outputs), [r.stderr for r in outputs]
    scanner = SecretScanner()
    scanner.add_cluster_keys(kube, op_ns)
    kek = kek_data(kube, op_ns)
    assert kek is not None
    # The scan can fail: it finds a KEK however it is spelled.
    assert scanner.find(f"key={kek['v2'].hex()}") == ["KEK v2"]
    assert scanner.find(str(kek["v1"])) == ["KEK v1"]
    for result in outputs:
        scanner.assert_clean(f"`keys {result.args[5]}` output", result.stdout + result.stderr)


def test_an_unknown_fault_point_is_refused(
    kube: KubeClient, env: dict[str, str], op_ns: str
) -> None:
    result = keys_cli(env, "keys", "init", "--operator-namespace", op_ns, fault="kek-creatd")
    assert result.returncode == 1
    assert "'kek-creatd' is not a fault point" in result.stderr
    assert kek_data(kube, op_ns) is None


# -- seal --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "Acme", "--name", "api"], "--tenant 'Acme': must be a DNS label"),
        (["--tenant", "acme", "--name", "cleo-api"], "--name 'cleo-api': must not start with"),
        (
            ["--tenant", "acme", "--name", "api", "--from-literal", "BAD KEY=pw-9d1"],
            "key 'BAD KEY': must be letters, digits",
        ),
        (
            ["--tenant", "acme", "--name", "api", "--from-literal", "pw-9d1"],
            "--from-literal takes KEY=VALUE",
        ),
        (
            [
                "--tenant",
                "acme",
                "--name",
                "api",
                "--from-literal",
                "K=pw-9d1",
                "--from-literal",
                "K=pw-9d1",
            ],
            "key 'K' is given twice",
        ),
        (["--tenant", "acme", "--name", "api"], "nothing to seal"),
    ],
)
def test_seal_refuses_what_the_api_would_refuse_and_never_echoes_a_value(
    env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    public = tmp_path / "key"
    public.write_text(SealingKeyring.generate(NOW).public_key.to_text())
    if message != "nothing to seal" and "--from-literal" not in args:
        args = [*args, "--from-literal", "K=pw-9d1"]

    result = keys_cli(env, "seal", *args, "--public-key", str(public))

    assert result.returncode == 1
    assert message in result.stderr
    assert result.stdout == ""
    assert "pw-9d1" not in result.stderr


def test_seal_with_a_public_key_that_was_altered_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    text = SealingKeyring.generate(NOW).public_key.to_text()
    other = SealingKeyring.generate(NOW).public_key.to_text()
    public = tmp_path / "key"
    # Another key under the first key's id: a copy-paste mix-up.
    public.write_text(text.rsplit(":", 1)[0] + ":" + other.rsplit(":", 1)[1])

    result = keys_cli(
        env,
        "seal",
        "--tenant",
        "acme",
        "--name",
        "api",
        "--from-literal",
        "K=pw-9d1",
        "--public-key",
        str(public),
    )

    assert result.returncode == 1
    assert "does not match its key" in result.stderr
    assert result.stdout == ""

"""`kubectl cleo seal` without a cluster (`--public-key`), and the shared sealing pieces.

The sealed values are opened with the private keyring here, so the tests prove the file holds
the right values for the right tenant, Secret and key, not only that something was written.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import yaml

from cleo_operator.cli.plugin import main
from cleo_operator.cli.sealing import check_sealed, reseal
from cleo_operator.crypto import SealingKeyring, WrongContext, seal, unseal

NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)
TENANT_FILE = """\
# acme, reviewed
apiVersion: cleoai.io/v1alpha1
kind: CleoTenant
metadata:
  name: acme
spec:
  workload:
    image: ghcr.io/cleoai/cleo:1.2  # pinned
"""
VALUE = "correct-horse-battery-staple"


@pytest.fixture
def keyring() -> SealingKeyring:
    return SealingKeyring.generate(NOW)


@pytest.fixture
def public_key(tmp_path: Path, keyring: SealingKeyring) -> Path:
    path = tmp_path / "public.txt"
    path.write_text(keyring.public_key.to_text())
    return path


@pytest.fixture
def tenant_file(tmp_path: Path) -> Path:
    path = tmp_path / "acme.yaml"
    path.write_text(TENANT_FILE)
    return path


def secrets_of(path: Path) -> list[dict[str, object]]:
    secrets: list[dict[str, object]] = yaml.safe_load(path.read_text())["spec"]["secrets"]
    return secrets


def test_a_secret_manifest_is_sealed_into_the_file_and_opens_for_its_place(
    tmp_path: Path,
    tenant_file: Path,
    public_key: Path,
    keyring: SealingKeyring,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api-keys"},
             "stringData": {"OPENAI_KEY": VALUE}}
        )
    )  # fmt: skip
    code = main(
        ["seal", str(tenant_file), "--secret", str(secret), "--public-key", str(public_key)]
    )
    assert code == 0
    out, err = capsys.readouterr()
    assert VALUE not in out + err + tenant_file.read_text()
    assert "api-keys   OPENAI_KEY" in out
    assert tenant_file.read_text().startswith(TENANT_FILE)  # comments and layout kept
    [entry] = secrets_of(tenant_file)
    sealed = entry["data"]["OPENAI_KEY"]
    opened = unseal(keyring, sealed, tenant="acme", secret="api-keys", key="OPENAI_KEY")
    assert opened == VALUE.encode()

    # A second run merges: new keys join the entry, given keys are replaced, others stay.
    code = main(
        ["seal", str(tenant_file), "--name", "api-keys", "--from-literal", "OPENAI_KEY=rotated",
         "--from-literal", "OTHER=x", "--public-key", str(public_key), "-o", "json"]
    )  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert {(r["key"], r["action"]) for r in result["sealed"]} == {
        ("OPENAI_KEY", "replaced"),
        ("OTHER", "added"),
    }
    [entry] = secrets_of(tenant_file)
    data = entry["data"]
    assert sorted(data) == ["OPENAI_KEY", "OTHER"]
    assert (
        unseal(keyring, data["OPENAI_KEY"], tenant="acme", secret="api-keys", key="OPENAI_KEY")
        == b"rotated"
    )


@pytest.mark.security
def test_check_passes_a_good_file_and_names_a_value_copied_from_another_tenant(
    tenant_file: Path, public_key: Path, keyring: SealingKeyring, capsys: pytest.CaptureFixture[str]
) -> None:
    good = seal(keyring.public_key, tenant="acme", secret="db", key="PASSWORD", plaintext=b"v")
    stolen = seal(keyring.public_key, tenant="bravo", secret="db", key="TOKEN", plaintext=b"v")
    tenant_file.write_text(
        TENANT_FILE + f"  secrets:\n  - name: db\n    data:\n      PASSWORD: {good}\n"
        f"      TOKEN: {stolen}\n"
    )
    code = main(
        ["seal", str(tenant_file), "--check", "--public-key", str(public_key), "-o", "yaml"]
    )
    out, err = capsys.readouterr()
    assert code == 1
    report = yaml.safe_load(out)
    by_key = {row["key"]: row for row in report["values"]}
    assert by_key["PASSWORD"]["ok"] is True
    assert by_key["TOKEN"]["ok"] is False
    assert "tenant 'bravo'" in by_key["TOKEN"]["problem"]
    assert "differs in: tenant" in by_key["TOKEN"]["problem"]
    assert "db/TOKEN (WrongContext)" in err


def test_check_names_a_value_sealed_to_an_older_key(keyring: SealingKeyring) -> None:
    old = seal(keyring.public_key, tenant="acme", secret="db", key="K", plaintext=b"v")
    rotated = keyring.rotate(NOW)
    result = check_sealed(rotated.public_key, tenant="acme", secret="db", key="K", text=old)
    assert not result.ok
    assert result.key_id == keyring.public_key.key_id
    assert "cluster's current key is " + rotated.public_key.key_id in (result.problem or "")
    garbage = check_sealed(rotated.public_key, tenant="acme", secret="db", key="K", text="x")
    assert (garbage.ok, garbage.key_id) == (False, None)


def test_reseal_moves_old_values_to_the_current_key_and_keeps_current_ones(
    keyring: SealingKeyring,
) -> None:
    old = seal(keyring.public_key, tenant="acme", secret="db", key="K", plaintext=b"secret")
    rotated = keyring.rotate(NOW)
    new, changed = reseal(rotated, tenant="acme", secret="db", key="K", text=old)
    assert changed
    assert check_sealed(rotated.public_key, tenant="acme", secret="db", key="K", text=new).ok
    assert unseal(rotated, new, tenant="acme", secret="db", key="K") == b"secret"
    assert reseal(rotated, tenant="acme", secret="db", key="K", text=new) == (new, False)
    with pytest.raises(WrongContext):
        reseal(rotated, tenant="bravo", secret="db", key="K", text=old)


def test_bad_requests_are_one_line_and_change_nothing(
    tenant_file: Path, public_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, message in (
        ([], "nothing to seal"),
        (["--from-literal", "A=b"], "name the Secret"),
        (["--name", "cleo-keyring", "--from-literal", "A=b"], "must not start with 'cleo-'"),
        (["--name", "x", "--from-literal", VALUE], "one argument has no KEY="),
        (["--check", "--reseal"], "--check and --reseal are two commands"),
        (["--secret", "-", "--from-file", "K=-"], "stdin can be read once"),
        (["--check", "--from-literal", "A=b"], "read the file only"),
    ):
        code = main(["seal", str(tenant_file), "--public-key", str(public_key), *args])
        err = capsys.readouterr().err
        assert code == 1, args
        assert message in err, (args, err)
        assert len(err.strip().splitlines()) == 1
        assert VALUE not in err
        assert tenant_file.read_text() == TENANT_FILE

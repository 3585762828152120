"""What the runner's pod is given: a keyring mounted as a Secret volume, destinations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cleo_operator.backup.commands import load_keyring_dir, storage_from_destination
from cleo_operator.backup.object_store import ObjectStoreStorage
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import InvalidKeyMaterial, Keyring


def mount_like_kubernetes(folder: Path, data: dict[str, bytes]) -> None:
    """The layout kubelet gives a Secret volume: files behind `..data` symlinks."""
    real = folder / "..2026_03_01_12_00_00.123"
    real.mkdir(parents=True)
    for name, value in data.items():
        (real / name).write_bytes(value)
    (folder / "..data").symlink_to(real.name)
    for name in data:
        (folder / name).symlink_to(f"..data/{name}")


def test_keyring_from_a_mounted_secret(tmp_path: Path) -> None:
    keyring = Keyring.generate(datetime.now(UTC)).rotate(datetime.now(UTC))
    mount_like_kubernetes(tmp_path / "keyring", keyring.to_secret_data())
    loaded = load_keyring_dir(tmp_path / "keyring")
    assert loaded.fingerprint() == keyring.fingerprint()


def test_a_broken_keyring_mount_is_an_error_not_a_new_keyring(tmp_path: Path) -> None:
    keyring = Keyring.generate(datetime.now(UTC))
    data = keyring.to_secret_data()
    del data["v1.key"]
    mount_like_kubernetes(tmp_path / "keyring", data)
    with pytest.raises(InvalidKeyMaterial, match=r"v1\.key"):
        load_keyring_dir(tmp_path / "keyring")
    with pytest.raises(InvalidKeyMaterial, match="mount the tenant's keyring Secret"):
        load_keyring_dir(tmp_path / "absent")


def test_destinations(tmp_path: Path) -> None:
    local = storage_from_destination(str(tmp_path / "b"))
    assert isinstance(local, LocalStorage)
    assert local.root == tmp_path / "b"
    url = storage_from_destination(f"file://{tmp_path}/c")
    assert isinstance(url, LocalStorage)
    assert url.root == tmp_path / "c"
    with pytest.raises(ValueError, match="scheme 'ftp' is not supported"):
        storage_from_destination("ftp://host/x")
    env = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s" * 40}
    s3 = storage_from_destination(
        "s3://cleo-backups/tenants/acme?region=eu-west-1&endpoint=http://minio:9000", environ=env
    )
    assert isinstance(s3, ObjectStoreStorage)
    assert s3.description == "S3 bucket cleo-backups/tenants/acme at http://minio:9000"
    config = s3.store.config
    assert (config["bucket"], config["region"], config["endpoint"]) == (
        "cleo-backups",
        "eu-west-1",
        "http://minio:9000",
    )
    assert s3.store.prefix == "tenants/acme"
    assert "s" * 40 not in repr(s3)
    aws = storage_from_destination("s3://cleo-backups", environ=env)
    assert isinstance(aws, ObjectStoreStorage)
    assert aws.description == "S3 bucket cleo-backups at https://s3.us-east-1.amazonaws.com"
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID"):
        storage_from_destination("s3://cleo-backups/x", environ={"AWS_SECRET_ACCESS_KEY": "x"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['acl'\]"):
        storage_from_destination("s3://cleo-backups/x?acl=private", environ=env)
    gcs = storage_from_destination(
        "gs://cleo-backups/acme?endpoint=http://127.0.0.1:4443", environ={}
    )
    assert isinstance(gcs, ObjectStoreStorage)
    assert gcs.description == "GCS bucket cleo-backups/acme at http://127.0.0.1:4443"
    azure = storage_from_destination(
        "azure://cleoacct/backups/tenants/acme", environ={"AZURE_STORAGE_SAS_TOKEN": "sv=x&sig=y"}
    )
    assert isinstance(azure, ObjectStoreStorage)
    assert azure.store.config["container_name"] == "backups"
    assert azure.store.prefix == "tenants/acme"
    assert azure.description == (
        "Azure container cleoacct/backups/tenants/acme at https://cleoacct.blob.core.windows.net"
    )
    with pytest.raises(ValueError, match="name the container"):
        storage_from_destination("azure://cleoacct", environ={})
    with pytest.raises(ValueError, match="not both"):
        storage_from_destination(
            "azure://cleoacct/c1",
            environ={"AZURE_STORAGE_SAS_TOKEN": "x", "AZURE_STORAGE_ACCOUNT_KEY": "y"},
        )


def test_a_runner_destination_must_be_under_its_volume_mount(tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    inside = storage_from_destination(f"{mount}/cleo/acme", volume_mount=mount)
    assert isinstance(inside, LocalStorage)
    with pytest.raises(ValueError, match="is not under"):
        storage_from_destination(str(tmp_path / "elsewhere"), volume_mount=mount)

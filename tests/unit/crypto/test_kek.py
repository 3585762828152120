"""Key-encryption keys: wrapping, rotation and re-wrapping, and both storage layouts."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleo_operator.crypto.envelope import Envelope, encrypt_envelope
from cleo_operator.crypto.errors import (
    InvalidKeyMaterial,
    MalformedEnvelope,
    Tampered,
    UnknownKeyVersion,
    WrongContext,
)
from cleo_operator.crypto.kek import (
    FileKEKProvider,
    KEKProvider,
    KeyEncryptionKeys,
    kek_from_secret_data,
    kek_to_secret_data,
)
from tests.unit.crypto.secrets_check import assert_no_secret

CONTEXT = {"tenant": "acme", "purpose": "backup-key"}


@given(data_key=st.binary(min_size=0, max_size=256))
def test_wrap_then_unwrap_returns_the_key(data_key: bytes) -> None:
    keks = KeyEncryptionKeys.generate()
    wrapped = keks.wrap(data_key, context=CONTEXT)
    assert keks.unwrap(wrapped, context=CONTEXT) == data_key


def test_unwrapping_for_another_context_is_wrong_context() -> None:
    keks = KeyEncryptionKeys.generate()
    wrapped = keks.wrap(os.urandom(32), context=CONTEXT)
    with pytest.raises(WrongContext) as caught:
        keks.unwrap(wrapped, context={**CONTEXT, "tenant": "globex"})
    assert caught.value.mismatched == ("tenant",)


def test_unwrapping_with_another_kek_of_the_same_version_is_tampered() -> None:
    wrapped = KeyEncryptionKeys.generate().wrap(os.urandom(32), context=CONTEXT)
    with pytest.raises(Tampered):
        KeyEncryptionKeys.generate().unwrap(wrapped, context=CONTEXT)


def test_rotation_then_rewrap_leaves_only_the_new_version_needed() -> None:
    original = KeyEncryptionKeys.generate()
    data_key = os.urandom(32)
    wrapped = original.wrap(data_key, context=CONTEXT)
    rotated = original.rotate()
    assert rotated.versions == (1, 2)
    assert rotated.current_version == 2
    # Old wrapped keys still open, and are flagged for re-wrapping.
    assert rotated.unwrap(wrapped, context=CONTEXT) == data_key
    assert rotated.needs_rewrap(wrapped)
    assert not original.needs_rewrap(wrapped)
    rewrapped = rotated.rewrap(wrapped, context=CONTEXT)
    assert Envelope.from_text(rewrapped).key_id == "v2"
    assert not rotated.needs_rewrap(rewrapped)
    # After re-wrapping, version 1 can be retired: version 2 alone opens the key...
    only_new = KeyEncryptionKeys.from_mapping({2: dict(rotated.keys)[2]})
    assert only_new.unwrap(rewrapped, context=CONTEXT) == data_key
    # ...and version 1 alone no longer can.
    only_old = KeyEncryptionKeys.from_mapping({1: dict(rotated.keys)[1]})
    with pytest.raises(UnknownKeyVersion) as caught:
        only_old.unwrap(rewrapped, context=CONTEXT)
    assert caught.value.key_id == "v2"


def test_new_wraps_use_the_current_version() -> None:
    keks = KeyEncryptionKeys.generate().rotate().rotate()
    assert Envelope.from_text(keks.wrap(b"k" * 32, context=CONTEXT)).key_id == "v3"


def test_a_missing_version_is_named_with_what_is_loaded() -> None:
    rotated = KeyEncryptionKeys.generate().rotate()
    wrapped = rotated.wrap(os.urandom(32), context=CONTEXT)
    only_first = KeyEncryptionKeys.from_mapping({1: dict(rotated.keys)[1]})
    with pytest.raises(UnknownKeyVersion, match=r"KEK v2, which is not loaded \(loaded: v1\)"):
        only_first.unwrap(wrapped, context=CONTEXT)


def test_needs_rewrap_refuses_other_kinds_of_envelope() -> None:
    data = encrypt_envelope(os.urandom(32), kind="data", key_id="v1", context={}, plaintext=b"")
    with pytest.raises(MalformedEnvelope, match="key-encryption key"):
        KeyEncryptionKeys.generate().needs_rewrap(data.to_text())


def test_secret_data_round_trip() -> None:
    keks = KeyEncryptionKeys.generate().rotate()
    data = kek_to_secret_data(keks)
    assert set(data) == {"v1", "v2"}
    assert all(len(v) == 32 for v in data.values())
    assert kek_from_secret_data(data) == keks


def test_a_secret_mounted_as_a_volume_is_a_kek_directory(tmp_path: Path) -> None:
    """The two layouts are one: write the Secret data as files, read them as a directory."""
    keks = KeyEncryptionKeys.generate().rotate().rotate()
    # The layout the kubelet gives a Secret volume: a timestamped directory, a `..data`
    # symlink to it, and one symlink per key.
    stamped = tmp_path / "..2026_01_01_00_00_00.000000000"
    stamped.mkdir()
    (tmp_path / "..data").symlink_to(stamped.name)
    for name, value in kek_to_secret_data(keks).items():
        (stamped / name).write_bytes(value)
        (tmp_path / name).symlink_to(Path("..data") / name)
    provider: KEKProvider = FileKEKProvider(tmp_path)
    assert provider.load() == keks


def test_the_directory_accepts_raw_and_base64_keys_named_with_or_without_v(
    tmp_path: Path,
) -> None:
    raw, standard, urlsafe = os.urandom(32), os.urandom(32), os.urandom(32)
    while b"+" not in base64.b64encode(urlsafe) and b"/" not in base64.b64encode(urlsafe):
        urlsafe = os.urandom(32)
    (tmp_path / "1").write_bytes(raw)
    (tmp_path / "v2").write_bytes(base64.b64encode(standard) + b"\n")
    (tmp_path / "3").write_bytes(base64.urlsafe_b64encode(urlsafe).rstrip(b"="))
    keks = FileKEKProvider(tmp_path).load()
    assert dict(keks.keys) == {1: raw, 2: standard, 3: urlsafe}
    assert keks.current_version == 3


def test_the_directory_is_re_read_so_a_new_version_is_picked_up(tmp_path: Path) -> None:
    provider = FileKEKProvider(tmp_path)
    (tmp_path / "v1").write_bytes(os.urandom(32))
    wrapped = provider.load().wrap(b"x" * 32, context=CONTEXT)
    (tmp_path / "v2").write_bytes(os.urandom(32))
    reloaded = provider.load()
    assert reloaded.current_version == 2
    assert reloaded.needs_rewrap(wrapped)
    assert reloaded.unwrap(wrapped, context=CONTEXT) == b"x" * 32


def test_a_key_of_the_wrong_size_is_named_without_its_content(tmp_path: Path) -> None:
    content = os.urandom(33)
    (tmp_path / "v1").write_bytes(content)
    with pytest.raises(InvalidKeyMaterial) as caught:
        FileKEKProvider(tmp_path).load()
    assert "'v1'" in caught.value.message
    assert "33 bytes" in caught.value.message
    assert_no_secret(caught.value.message, content)
    assert_no_secret(repr(caught.value), content)


@pytest.mark.parametrize(
    ("size", "message"), [(16, "32-byte key, raw or base64"), (24, "encoding of a 24-byte key")]
)
def test_base64_of_the_wrong_size_is_refused(tmp_path: Path, size: int, message: str) -> None:
    # base64 of 24 bytes is 32 characters: it must not pass for a raw 32-byte key.
    (tmp_path / "v1").write_bytes(base64.b64encode(os.urandom(size)))
    with pytest.raises(InvalidKeyMaterial, match=message):
        FileKEKProvider(tmp_path).load()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"v1": None, "1": None}, "version 1 twice"),
        ({"kek-1": None}, "not a KEK version"),
        ({"v0": None}, "not a KEK version"),
        ({}, "holds no KEK"),
    ],
)
def test_directory_mistakes_are_explained(
    tmp_path: Path, files: dict[str, None], message: str
) -> None:
    for name in files:
        (tmp_path / name).write_bytes(os.urandom(32))
    with pytest.raises(InvalidKeyMaterial, match=message):
        FileKEKProvider(tmp_path).load()


def test_a_missing_directory_points_at_the_mount(tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyMaterial, match="volume mount"):
        FileKEKProvider(tmp_path / "absent").load()


def test_a_subdirectory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    with pytest.raises(InvalidKeyMaterial, match="not a file"):
        FileKEKProvider(tmp_path).load()


def test_secret_data_mistakes_name_the_data_key() -> None:
    with pytest.raises(InvalidKeyMaterial, match="data key 'v1' in the KEK Secret"):
        kek_from_secret_data({"v1": b"short"})


def test_reprs_show_versions_but_no_key_bytes() -> None:
    keks = KeyEncryptionKeys.generate().rotate()
    for text in (repr(keks), str(keks), repr(FileKEKProvider(Path("keys")))):
        assert_no_secret(text, *(key for _, key in keks.keys))
    assert repr(keks) == "KeyEncryptionKeys(current=v2, versions=[v1, v2])"


def test_invalid_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        KeyEncryptionKeys.from_mapping({1: b"x"})
    with pytest.raises(ValueError, match="distinct integers"):
        KeyEncryptionKeys.from_mapping({})

"""The tenant data keyring: encryption, rotation, storage, fingerprint and KEK-wrapped copies."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleo_operator.crypto.envelope import Envelope
from cleo_operator.crypto.errors import (
    CryptoError,
    InvalidKeyMaterial,
    MalformedEnvelope,
    Tampered,
    UnknownKeyVersion,
    WrongContext,
)
from cleo_operator.crypto.kek import KeyEncryptionKeys
from cleo_operator.crypto.keyring import (
    KEYRING_INDEX_ENTRY,
    DataKey,
    Keyring,
    unwrap_keyring,
    wrap_keyring,
)
from tests.unit.crypto.secrets_check import assert_no_secret
from tests.unit.crypto.tampering import base64url_characters, positions, with_character

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
CONTEXT = {"tenant": "acme", "table": "memories", "row": "42"}


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.generate(NOW)


def test_a_new_keyring_has_one_active_version(keyring: Keyring) -> None:
    assert [k.version for k in keyring.keys] == [1]
    assert keyring.active_version == 1
    assert keyring.active.key_id == "v1"
    assert keyring.active.created == NOW


@settings(max_examples=50)
@given(plaintext=st.binary(max_size=4096))
def test_encrypt_then_decrypt_returns_the_plaintext(keyring: Keyring, plaintext: bytes) -> None:
    envelope = keyring.encrypt(plaintext, context=CONTEXT)
    assert keyring.decrypt(envelope, context=CONTEXT) == plaintext


def test_decrypting_for_another_context_is_wrong_context(keyring: Keyring) -> None:
    envelope = keyring.encrypt(b"memory", context=CONTEXT)
    with pytest.raises(WrongContext) as caught:
        keyring.decrypt(envelope, context={**CONTEXT, "tenant": "globex"})
    assert caught.value.mismatched == ("tenant",)


def test_another_tenants_keyring_cannot_decrypt(keyring: Keyring) -> None:
    envelope = keyring.encrypt(b"memory", context=CONTEXT)
    with pytest.raises(Tampered):
        Keyring.generate(NOW).decrypt(envelope, context=CONTEXT)


def test_rotation_keeps_old_ciphertexts_readable_and_encrypts_with_the_new_version() -> None:
    before = Keyring.generate(NOW)
    old = before.encrypt(b"old memory", context=CONTEXT)
    after = before.rotate(LATER)
    assert [k.version for k in after.keys] == [1, 2]
    assert after.active_version == 2
    assert after.active.created == LATER
    assert after.keys[0] == before.keys[0]
    assert before.active_version == 1  # rotate returns a new keyring
    new = after.encrypt(b"new memory", context=CONTEXT)
    assert Envelope.from_text(old).key_id == "v1"
    assert Envelope.from_text(new).key_id == "v2"
    assert after.decrypt(old, context=CONTEXT) == b"old memory"
    assert after.decrypt(new, context=CONTEXT) == b"new memory"
    assert after.needs_reencrypt(old)
    assert not after.needs_reencrypt(new)
    # The keyring before the rotation does not know v2.
    with pytest.raises(UnknownKeyVersion) as caught:
        before.decrypt(new, context=CONTEXT)
    assert caught.value.key_id == "v2"
    assert "v2" in caught.value.message
    assert "holds v1" in caught.value.message


def test_needs_reencrypt_refuses_other_kinds(keyring: Keyring) -> None:
    wrapped = KeyEncryptionKeys.generate().wrap(b"k" * 32, context={})
    with pytest.raises(MalformedEnvelope):
        keyring.needs_reencrypt(wrapped)
    with pytest.raises(MalformedEnvelope, match="wrong place"):
        keyring.decrypt(wrapped, context={})


@settings(max_examples=100)
@given(
    plaintext=st.binary(max_size=1024),
    where=positions,
    replacement=base64url_characters,
)
def test_a_changed_character_of_a_ciphertext_is_detected(
    keyring: Keyring, plaintext: bytes, where: float, replacement: str
) -> None:
    changed = with_character(keyring.encrypt(plaintext, context=CONTEXT), where, replacement)
    if changed is None:
        return
    with pytest.raises(CryptoError):
        keyring.decrypt(changed, context=CONTEXT)


def test_secret_data_has_a_stable_layout_and_round_trips() -> None:
    keyring = Keyring.generate(NOW).rotate(LATER)
    data = keyring.to_secret_data()
    assert set(data) == {KEYRING_INDEX_ENTRY, "v1.key", "v2.key"}
    assert data["v1.key"] == keyring.keys[0].material
    assert data["v2.key"] == keyring.keys[1].material
    assert json.loads(data[KEYRING_INDEX_ENTRY]) == {
        "format": "cleo-operator/tenant-keyring/v1",
        "active": 2,
        "keys": [
            {"version": 1, "id": "v1", "created": "2026-03-01T12:00:00Z"},
            {"version": 2, "id": "v2", "created": "2026-03-31T12:00:00Z"},
        ],
    }
    # Stable: the same keyring always serializes to the same bytes (no spurious writes).
    assert Keyring.from_secret_data(data).to_secret_data() == data
    assert Keyring.from_secret_data(data) == keyring
    assert_no_secret(data[KEYRING_INDEX_ENTRY].decode(), *(k.material for k in keyring.keys))


def test_loading_never_silently_regenerates() -> None:
    with pytest.raises(InvalidKeyMaterial, match="never regenerate"):
        Keyring.from_secret_data({})


def _index(data: dict[str, bytes]) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(data[KEYRING_INDEX_ENTRY])
    return parsed


def _with_index(data: dict[str, bytes], index: dict[str, object]) -> dict[str, bytes]:
    return {**data, KEYRING_INDEX_ENTRY: json.dumps(index).encode()}


Edit = Callable[[dict[str, bytes]], dict[str, bytes]]


def _edits() -> list[tuple[str, Edit]]:
    """(what is wrong, how to break two-version Secret data) pairs."""

    def drop_key(data: dict[str, bytes]) -> dict[str, bytes]:
        return {k: v for k, v in data.items() if k != "v1.key"}

    def short_key(data: dict[str, bytes]) -> dict[str, bytes]:
        return {**data, "v2.key": data["v2.key"][:31]}

    def extra_key(data: dict[str, bytes]) -> dict[str, bytes]:
        return {**data, "v3.key": os.urandom(32)}

    def active_missing(data: dict[str, bytes]) -> dict[str, bytes]:
        return _with_index(data, {**_index(data), "active": 7})

    def bool_version(data: dict[str, bytes]) -> dict[str, bytes]:
        index = _index(data)
        keys = index["keys"]
        assert isinstance(keys, list)
        return _with_index(data, {**index, "keys": [{**keys[0], "version": True}, keys[1]]})

    def naive_time(data: dict[str, bytes]) -> dict[str, bytes]:
        index = _index(data)
        keys = index["keys"]
        assert isinstance(keys, list)
        return _with_index(
            data, {**index, "keys": [{**keys[0], "created": "2026-03-01T12:00:00"}, keys[1]]}
        )

    def wrong_id(data: dict[str, bytes]) -> dict[str, bytes]:
        index = _index(data)
        keys = index["keys"]
        assert isinstance(keys, list)
        return _with_index(data, {**index, "keys": [{**keys[0], "id": "v9"}, keys[1]]})

    def other_format(data: dict[str, bytes]) -> dict[str, bytes]:
        return _with_index(data, {**_index(data), "format": "something/v2"})

    def not_json(data: dict[str, bytes]) -> dict[str, bytes]:
        return {**data, KEYRING_INDEX_ENTRY: b"{not json"}

    return [
        (r"no data\['v1.key'\]", drop_key),
        (r"data\['v2.key'\] .* must be 32 raw bytes, found 31", short_key),
        (r"data\['v3.key'\] .* is not listed", extra_key),
        (r"\.active .* must be one of the listed versions \[1, 2\]", active_missing),
        (r"\.keys\[0\]\.version .* integer", bool_version),
        (r"\.keys\[0\]\.created .* timezone", naive_time),
        ("'v9'", wrong_id),
        (r"\.format .* must be 'cleo-operator/tenant-keyring/v1'", other_format),
        ("not valid UTF-8 JSON", not_json),
    ]


@pytest.mark.parametrize(("message", "edit"), _edits(), ids=[m for m, _ in _edits()])
def test_broken_secret_data_is_refused_with_the_field_path(message: str, edit: Edit) -> None:
    data = Keyring.generate(NOW).rotate(LATER).to_secret_data()
    with pytest.raises(InvalidKeyMaterial, match=message) as caught:
        Keyring.from_secret_data(edit(data))
    assert_no_secret(caught.value.message, data["v1.key"], data["v2.key"])


def test_the_fingerprint_follows_the_keys_and_reveals_none_of_them() -> None:
    keyring = Keyring.generate(NOW)
    fingerprint = keyring.fingerprint()
    assert fingerprint.startswith("sha256:")
    assert len(fingerprint) == len("sha256:") + 64
    # Stable across storage, so the Deployment is not restarted for nothing...
    assert Keyring.from_secret_data(keyring.to_secret_data()).fingerprint() == fingerprint
    # ...changes on rotation, so the Deployment is restarted onto the new key...
    rotated = keyring.rotate(LATER)
    assert rotated.fingerprint() != fingerprint
    # ...and when only the active version changes back (a rollback).
    rolled_back = Keyring(keys=rotated.keys, active_version=1)
    assert rolled_back.fingerprint() not in (fingerprint, rotated.fingerprint())
    # Keys generated at the same moment still differ.
    assert Keyring.generate(NOW).fingerprint() != fingerprint
    assert_no_secret(rotated.fingerprint(), *(k.material for k in rotated.keys))


def test_wrapped_copy_round_trips_and_survives_kek_rotation() -> None:
    keyring = Keyring.generate(NOW).rotate(LATER)
    keks = KeyEncryptionKeys.generate()
    wrapped = wrap_keyring(keyring, keks, tenant="acme")
    assert unwrap_keyring(wrapped, keks, tenant="acme") == keyring
    rotated = keks.rotate()
    rewrapped = rotated.rewrap(wrapped, context={"tenant": "acme", "purpose": "tenant-keyring"})
    only_new = KeyEncryptionKeys.from_mapping({2: dict(rotated.keys)[2]})
    assert unwrap_keyring(rewrapped, only_new, tenant="acme") == keyring
    assert_no_secret(wrapped, *(k.material for k in keyring.keys))


def test_a_wrapped_copy_opens_only_for_its_tenant() -> None:
    keks = KeyEncryptionKeys.generate()
    wrapped = wrap_keyring(Keyring.generate(NOW), keks, tenant="acme")
    with pytest.raises(WrongContext) as caught:
        unwrap_keyring(wrapped, keks, tenant="globex")
    assert caught.value.mismatched == ("tenant",)


def test_a_wrapped_key_that_is_not_a_keyring_is_malformed() -> None:
    keks = KeyEncryptionKeys.generate()
    wrapped = keks.wrap(b"{}", context={"tenant": "acme", "purpose": "tenant-keyring"})
    with pytest.raises(MalformedEnvelope, match="format"):
        unwrap_keyring(wrapped, keks, tenant="acme")


def test_a_keyring_wraps_data_keys_like_a_kek(keyring: Keyring) -> None:
    data_key = os.urandom(32)
    wrapped = keyring.wrap(data_key, context={"backup": "nightly-1"})
    assert keyring.unwrap(wrapped, context={"backup": "nightly-1"}) == data_key
    with pytest.raises(WrongContext):
        keyring.unwrap(wrapped, context={"backup": "nightly-2"})


def test_reprs_show_versions_but_no_key_bytes() -> None:
    keyring = Keyring.generate(NOW).rotate(LATER)
    material = [k.material for k in keyring.keys]
    for text in (repr(keyring), str(keyring), repr(keyring.keys[0]), str(keyring.active)):
        assert_no_secret(text, *material)
    assert repr(keyring) == "Keyring(active=v2, versions=[v1, v2])"
    assert "version=1" in repr(keyring.keys[0])


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Keyring.generate(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        Keyring.generate(NOW).rotate(datetime(2026, 1, 1))


def test_inconsistent_keyrings_cannot_be_built() -> None:
    key = DataKey(version=1, created=NOW, material=os.urandom(32))
    with pytest.raises(ValueError, match="active version 2"):
        Keyring(keys=(key,), active_version=2)
    with pytest.raises(ValueError, match="non-empty"):
        Keyring(keys=(), active_version=1)
    with pytest.raises(ValueError, match="32-byte"):
        DataKey(version=1, created=NOW, material=b"short")

"""Sealing for GitOps: round trips, context binding, rotation, key storage, tampering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from cleo_operator.crypto._codec import b64url_decode, b64url_encode
from cleo_operator.crypto.envelope import TEXT_PREFIX, Envelope
from cleo_operator.crypto.errors import (
    CryptoError,
    InvalidKeyMaterial,
    MalformedEnvelope,
    Tampered,
    UnknownKeyVersion,
    WrongContext,
)
from cleo_operator.crypto.sealing import (
    PUBLIC_KEY_TEXT_PREFIX,
    SEALING_INDEX_ENTRY,
    SealingKeyring,
    SealingPublicKey,
    seal,
    unseal,
)
from tests.unit.crypto.secrets_check import assert_no_secret
from tests.unit.crypto.tampering import base64url_characters, bit_flips, positions, with_character

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
WHERE = {"tenant": "acme", "secret": "db-credentials", "key": "password"}


@pytest.fixture(scope="module")
def keyring() -> SealingKeyring:
    return SealingKeyring.generate(NOW)


def reseal_with(sealed: str, **changes: object) -> str:
    """The same sealed value with header fields replaced (what an attacker can do)."""
    envelope = Envelope.from_text(sealed)
    fields = {
        "kind": envelope.kind,
        "key_id": envelope.key_id,
        "context": envelope.context,
        "params": envelope.params,
        "nonce": envelope.nonce,
        "ciphertext": envelope.ciphertext,
        **changes,
    }
    return Envelope(**fields).to_text()  # type: ignore[arg-type]


@settings(max_examples=30)
@given(plaintext=st.binary(max_size=1024))
def test_seal_then_unseal_returns_the_value(keyring: SealingKeyring, plaintext: bytes) -> None:
    sealed = seal(keyring.public_key, plaintext=plaintext, **WHERE)
    assert sealed.startswith(TEXT_PREFIX)
    assert unseal(keyring, sealed, **WHERE) == plaintext


def test_sealing_needs_only_the_public_key_from_its_text_or_pem(keyring: SealingKeyring) -> None:
    from_text = SealingPublicKey.from_text(keyring.public_key.to_text())
    from_pem = SealingPublicKey.from_pem(keyring.public_key.to_pem())
    assert from_text == from_pem == keyring.public_key
    assert keyring.public_key.to_text().startswith(PUBLIC_KEY_TEXT_PREFIX + from_pem.key_id + ":")
    sealed = seal(from_pem, plaintext=b"hunter2", **WHERE)
    assert unseal(keyring, sealed, **WHERE) == b"hunter2"


def test_sealing_twice_gives_different_ciphertexts(keyring: SealingKeyring) -> None:
    first = seal(keyring.public_key, plaintext=b"same", **WHERE)
    second = seal(keyring.public_key, plaintext=b"same", **WHERE)
    assert first != second
    # A fresh ephemeral key each time: no two sealed values share a wrapping key.
    assert Envelope.from_text(first).params[:32] != Envelope.from_text(second).params[:32]


@pytest.mark.parametrize(
    ("field", "other"),
    [("tenant", "globex"), ("secret", "api-tokens"), ("key", "username")],
)
def test_a_value_used_for_another_tenant_secret_or_key_is_wrong_context(
    keyring: SealingKeyring, field: str, other: str
) -> None:
    sealed = seal(keyring.public_key, plaintext=b"acme's password", **WHERE)
    with pytest.raises(WrongContext) as caught:
        unseal(keyring, sealed, **{**WHERE, field: other})
    assert caught.value.mismatched == (field,)
    assert other in caught.value.message
    assert WHERE[field] in caught.value.message


@pytest.mark.parametrize("field", ["tenant", "secret", "key"])
def test_rewriting_the_recorded_context_to_match_is_tampered(
    keyring: SealingKeyring, field: str
) -> None:
    sealed = seal(keyring.public_key, plaintext=b"acme's password", **WHERE)
    target = {**WHERE, field: "victim"}
    forged = reseal_with(sealed, context=tuple(sorted(target.items())))
    with pytest.raises(Tampered):
        unseal(keyring, forged, **target)


def test_swapping_key_blocks_between_sealed_values_is_tampered(keyring: SealingKeyring) -> None:
    first = seal(keyring.public_key, plaintext=b"first value", **WHERE)
    second = seal(keyring.public_key, plaintext=b"other value", **WHERE)
    spliced = reseal_with(first, params=Envelope.from_text(second).params)
    with pytest.raises(Tampered):
        unseal(keyring, spliced, **WHERE)


def test_a_value_sealed_for_another_cluster_names_the_unknown_key(
    keyring: SealingKeyring,
) -> None:
    other_cluster = SealingKeyring.generate(NOW)
    sealed = seal(other_cluster.public_key, plaintext=b"x", **WHERE)
    with pytest.raises(UnknownKeyVersion) as caught:
        unseal(keyring, sealed, **WHERE)
    assert caught.value.key_id == other_cluster.public_key.key_id
    assert other_cluster.public_key.key_id in caught.value.message
    assert keyring.public_key.key_id in caught.value.message


def test_rotation_keeps_old_values_open_and_seals_new_ones_to_the_new_key() -> None:
    before = SealingKeyring.generate(NOW)
    old_sealed = seal(before.public_key, plaintext=b"old", **WHERE)
    after = before.rotate(NOW + timedelta(days=90))
    assert after.current_version == 2
    assert [k.version for k in after.keys] == [1, 2]
    assert after.public_key != before.public_key
    assert after.keys[0] == before.keys[0]
    new_sealed = seal(after.public_key, plaintext=b"new", **WHERE)
    assert Envelope.from_text(new_sealed).key_id == after.public_key.key_id
    assert unseal(after, old_sealed, **WHERE) == b"old"
    assert unseal(after, new_sealed, **WHERE) == b"new"
    # The keyring before the rotation cannot open what is sealed to the new key.
    with pytest.raises(UnknownKeyVersion):
        unseal(before, new_sealed, **WHERE)
    # Rotation returns a new keyring and leaves the old one as it was.
    assert before.current_version == 1


def test_every_single_bit_flip_of_a_sealed_value_is_detected(keyring: SealingKeyring) -> None:
    where = {"tenant": "t", "secret": "s", "key": "k"}
    sealed = seal(keyring.public_key, plaintext=b"pw", **where)
    data = Envelope.from_text(sealed).to_bytes()
    for flipped in bit_flips(data):
        with pytest.raises(CryptoError):
            unseal(keyring, TEXT_PREFIX + b64url_encode(flipped), **where)


@settings(max_examples=100)
@given(
    plaintext=st.binary(max_size=2048),
    where=positions,
    replacement=base64url_characters,
)
def test_a_changed_character_in_a_larger_sealed_value_is_detected(
    keyring: SealingKeyring, plaintext: bytes, where: float, replacement: str
) -> None:
    sealed = seal(keyring.public_key, plaintext=plaintext, **WHERE)
    changed = with_character(sealed, where, replacement)
    if changed is None:
        return
    with pytest.raises(CryptoError):
        unseal(keyring, changed, **WHERE)


def test_a_keyring_value_is_not_accepted_as_a_sealed_value(keyring: SealingKeyring) -> None:
    sealed = seal(keyring.public_key, plaintext=b"x", **WHERE)
    relabelled = reseal_with(sealed, kind="data")
    with pytest.raises(MalformedEnvelope, match="wrong place"):
        unseal(keyring, relabelled, **WHERE)


def test_a_wrong_size_key_block_is_malformed(keyring: SealingKeyring) -> None:
    sealed = seal(keyring.public_key, plaintext=b"x", **WHERE)
    shortened = reseal_with(sealed, params=Envelope.from_text(sealed).params[:-1])
    with pytest.raises(MalformedEnvelope, match="key block"):
        unseal(keyring, shortened, **WHERE)


def test_a_low_order_ephemeral_key_is_tampered(keyring: SealingKeyring) -> None:
    sealed = seal(keyring.public_key, plaintext=b"x", **WHERE)
    params = Envelope.from_text(sealed).params
    with pytest.raises(Tampered, match="ephemeral"):
        unseal(keyring, reseal_with(sealed, params=bytes(32) + params[32:]), **WHERE)


def test_the_keyring_survives_its_secret_data_round_trip() -> None:
    keyring = SealingKeyring.generate(NOW).rotate(NOW + timedelta(days=1))
    data = keyring.to_secret_data()
    assert set(data) == {SEALING_INDEX_ENTRY, "v1.key", "v2.key"}
    loaded = SealingKeyring.from_secret_data(data)
    assert loaded == keyring
    sealed = seal(keyring.public_key, plaintext=b"v", **WHERE)
    assert unseal(loaded, sealed, **WHERE) == b"v"
    index = data[SEALING_INDEX_ENTRY].decode()
    assert keyring.keys[0].key_id in index
    assert_no_secret(index, *(k.private_raw for k in keyring.keys))


def test_loading_refuses_a_key_that_does_not_match_its_recorded_id() -> None:
    first = SealingKeyring.generate(NOW)
    other = SealingKeyring.generate(NOW)
    data = first.to_secret_data()
    data["v1.key"] = other.keys[0].private_raw
    with pytest.raises(InvalidKeyMaterial, match="was edited"):
        SealingKeyring.from_secret_data(data)


def test_loading_without_the_index_never_generates_a_key() -> None:
    data = SealingKeyring.generate(NOW).to_secret_data()
    del data[SEALING_INDEX_ENTRY]
    with pytest.raises(InvalidKeyMaterial, match="never regenerate"):
        SealingKeyring.from_secret_data(data)


def test_public_key_text_with_a_mismatched_id_is_refused(keyring: SealingKeyring) -> None:
    other = SealingKeyring.generate(NOW).public_key
    text = keyring.public_key.to_text()
    pieced = text.rsplit(":", 1)[0] + ":" + other.to_text().rsplit(":", 1)[1]
    with pytest.raises(ValueError, match="does not match"):
        SealingPublicKey.from_text(pieced)
    with pytest.raises(ValueError, match="starts with"):
        SealingPublicKey.from_text("ssh-ed25519 AAAA")


def test_a_pem_key_of_another_algorithm_is_refused() -> None:
    pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not an X25519 key"):
        SealingPublicKey.from_pem(pem)


def test_reprs_show_ids_but_no_private_key_bytes() -> None:
    keyring = SealingKeyring.generate(NOW).rotate(NOW)
    private = [k.private_raw for k in keyring.keys]
    for text in (repr(keyring), str(keyring), repr(keyring.keys[0]), str(keyring.current)):
        assert_no_secret(text, *private)
    assert keyring.public_key.key_id in repr(keyring)
    assert "current=v2" in repr(keyring)


def test_timestamps_without_a_timezone_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SealingKeyring.generate(datetime(2026, 1, 1))


def test_sealed_text_is_canonical_base64url(keyring: SealingKeyring) -> None:
    sealed = seal(keyring.public_key, plaintext=b"abc", **WHERE)
    assert b64url_decode(sealed[len(TEXT_PREFIX) :]) == Envelope.from_text(sealed).to_bytes()

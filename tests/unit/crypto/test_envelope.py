"""The envelope format: round trips, strict parsing, and that every alteration is caught."""

from __future__ import annotations

import contextlib
import os
import string
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleo_operator.crypto.envelope import (
    TEXT_PREFIX,
    Envelope,
    decrypt_envelope,
    encrypt_envelope,
    normalize_context,
)
from cleo_operator.crypto.errors import (
    CryptoError,
    MalformedEnvelope,
    Tampered,
    UnknownKeyVersion,
    WrongContext,
)
from tests.unit.crypto.tampering import bit_flips, positions

KEY = bytes(range(32))
CONTEXT = {"tenant": "acme", "secret": "db", "key": "password"}

kinds = st.sampled_from(["data", "sealed", "kek"])
key_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
context_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,15}", fullmatch=True)
contexts = st.dictionaries(context_names, st.text(max_size=40), max_size=5)


def open_with(keys: Mapping[str, bytes], data: bytes, *, context: Mapping[str, str]) -> bytes:
    """What every user of envelopes does: parse, check the context, pick the key, decrypt."""
    envelope = Envelope.from_bytes(data)
    envelope.check(kind="data", context=context)
    if envelope.key_id not in keys:
        raise UnknownKeyVersion(f"no key {envelope.key_id}", key_id=envelope.key_id)
    return decrypt_envelope(envelope, keys[envelope.key_id])


def open_text(text: str, *, context: Mapping[str, str]) -> bytes:
    """`open_with` for the text form and the one key KEY (id v1)."""
    envelope = Envelope.from_text(text)
    envelope.check(kind="data", context=context)
    return decrypt_envelope(envelope, KEY)


envelopes = st.builds(
    Envelope,
    kind=kinds,
    key_id=key_ids,
    context=contexts.map(normalize_context),
    params=st.binary(max_size=80),
    nonce=st.binary(min_size=12, max_size=12),
    ciphertext=st.binary(min_size=16, max_size=200),
)


@given(envelope=envelopes)
def test_binary_and_text_forms_round_trip(envelope: Envelope) -> None:
    assert Envelope.from_bytes(envelope.to_bytes()) == envelope
    text = envelope.to_text()
    assert text.startswith(TEXT_PREFIX)
    assert set(text[len(TEXT_PREFIX) :]) <= set(string.ascii_letters + string.digits + "-_")
    assert Envelope.from_text(text) == envelope
    # YAML block scalars add a newline; indentation may add spaces.
    assert Envelope.from_text(f"  {text}\n") == envelope


@given(plaintext=st.binary(max_size=2048), context=contexts, key_id=key_ids)
def test_encrypt_then_decrypt_returns_the_plaintext(
    plaintext: bytes, context: dict[str, str], key_id: str
) -> None:
    envelope = encrypt_envelope(
        KEY, kind="data", key_id=key_id, context=context, plaintext=plaintext
    )
    parsed = Envelope.from_text(envelope.to_text())
    parsed.check(kind="data", context=dict(context))
    assert decrypt_envelope(parsed, KEY) == plaintext
    assert len(parsed.ciphertext) == len(plaintext) + 16


@given(data=st.binary(max_size=300))
def test_parsing_arbitrary_bytes_raises_only_malformed_envelope(data: bytes) -> None:
    with contextlib.suppress(MalformedEnvelope):
        Envelope.from_bytes(data)


@given(data=st.binary(max_size=200))
def test_parsing_bytes_after_the_magic_raises_only_malformed_envelope(data: bytes) -> None:
    try:
        envelope = Envelope.from_bytes(b"CLEO\x01" + data)
    except MalformedEnvelope:
        return
    # Whatever parses must serialize back to exactly the input: one encoding per envelope.
    assert envelope.to_bytes() == b"CLEO\x01" + data


@given(text=st.text(max_size=200))
def test_parsing_arbitrary_text_raises_only_malformed_envelope(text: str) -> None:
    for candidate in (text, TEXT_PREFIX + text):
        with contextlib.suppress(MalformedEnvelope):
            Envelope.from_text(candidate)


def test_two_encryptions_of_the_same_value_differ() -> None:
    first = encrypt_envelope(KEY, kind="data", key_id="v1", context=CONTEXT, plaintext=b"same")
    second = encrypt_envelope(KEY, kind="data", key_id="v1", context=CONTEXT, plaintext=b"same")
    assert first.nonce != second.nonce
    assert first.to_text() != second.to_text()


def test_the_recorded_context_is_readable_and_canonical() -> None:
    envelope = encrypt_envelope(KEY, kind="data", key_id="v7", context=CONTEXT, plaintext=b"x")
    parsed = Envelope.from_text(envelope.to_text())
    assert parsed.key_id == "v7"
    assert parsed.kind == "data"
    assert parsed.context == (("key", "password"), ("secret", "db"), ("tenant", "acme"))


@pytest.mark.parametrize(
    ("field", "value"), [("tenant", "other"), ("secret", "cache"), ("key", "username")]
)
def test_a_different_context_is_wrong_context_naming_the_field(field: str, value: str) -> None:
    data = encrypt_envelope(
        KEY, kind="data", key_id="v1", context=CONTEXT, plaintext=b"s3cret"
    ).to_bytes()
    with pytest.raises(WrongContext) as caught:
        open_with({"v1": KEY}, data, context={**CONTEXT, field: value})
    assert caught.value.mismatched == (field,)
    assert field in str(caught.value)
    assert caught.value.reason == "WrongContext"


def test_a_missing_or_extra_context_field_is_wrong_context() -> None:
    data = encrypt_envelope(
        KEY, kind="data", key_id="v1", context=CONTEXT, plaintext=b"s"
    ).to_bytes()
    with pytest.raises(WrongContext) as missing:
        open_with({"v1": KEY}, data, context={"tenant": "acme", "secret": "db"})
    assert missing.value.mismatched == ("key",)
    with pytest.raises(WrongContext) as extra:
        open_with({"v1": KEY}, data, context={**CONTEXT, "namespace": "x"})
    assert extra.value.mismatched == ("namespace",)


def test_editing_the_recorded_context_to_match_is_tampered() -> None:
    """The attack WrongContext must not hide: rewrite the header to the victim's context."""
    original = encrypt_envelope(
        KEY, kind="data", key_id="v1", context=CONTEXT, plaintext=b"tenant a's secret"
    )
    forged = Envelope(
        kind="data",
        key_id="v1",
        context=normalize_context({**CONTEXT, "tenant": "victim"}),
        params=original.params,
        nonce=original.nonce,
        ciphertext=original.ciphertext,
    )
    with pytest.raises(Tampered):
        open_with({"v1": KEY}, forged.to_bytes(), context={**CONTEXT, "tenant": "victim"})


def test_another_kind_of_envelope_is_refused_before_decryption() -> None:
    data = encrypt_envelope(KEY, kind="kek", key_id="v1", context=CONTEXT, plaintext=b"k")
    with pytest.raises(MalformedEnvelope, match="wrong place"):
        data.check(kind="data", context=CONTEXT)


def test_relabelling_the_kind_is_tampered() -> None:
    original = encrypt_envelope(KEY, kind="kek", key_id="v1", context=CONTEXT, plaintext=b"k")
    relabelled = Envelope(
        kind="data",
        key_id="v1",
        context=original.context,
        params=original.params,
        nonce=original.nonce,
        ciphertext=original.ciphertext,
    )
    with pytest.raises(Tampered):
        open_with({"v1": KEY}, relabelled.to_bytes(), context=CONTEXT)


def test_the_wrong_key_is_tampered() -> None:
    data = encrypt_envelope(
        KEY, kind="data", key_id="v1", context=CONTEXT, plaintext=b"s"
    ).to_bytes()
    with pytest.raises(Tampered):
        open_with({"v1": os.urandom(32)}, data, context=CONTEXT)


def test_every_single_bit_flip_of_a_small_envelope_is_detected() -> None:
    envelope = encrypt_envelope(
        KEY, kind="data", key_id="v1", context={"tenant": "t"}, plaintext=b"pw"
    )
    data = envelope.to_bytes()
    keys = {"v1": KEY, "v2": os.urandom(32)}
    assert open_with(keys, data, context={"tenant": "t"}) == b"pw"
    outcomes: set[type[CryptoError]] = set()
    for flipped in bit_flips(data):
        with pytest.raises(CryptoError) as caught:
            open_with(keys, flipped, context={"tenant": "t"})
        outcomes.add(type(caught.value))
    # Each kind of damage is reported as what it is somewhere in the envelope.
    assert outcomes == {MalformedEnvelope, WrongContext, UnknownKeyVersion, Tampered}


def test_every_single_character_change_of_the_text_form_is_detected() -> None:
    text = encrypt_envelope(
        KEY, kind="data", key_id="v1", context={"tenant": "t"}, plaintext=b"pw!"
    ).to_text()
    alphabet = string.ascii_letters + string.digits + "-_:=+/ "
    for position in range(len(text)):
        for replacement in alphabet:
            if replacement == text[position]:
                continue
            changed = text[:position] + replacement + text[position + 1 :]
            with pytest.raises(CryptoError):
                open_text(changed, context={"tenant": "t"})


@settings(max_examples=200)
@given(
    plaintext=st.binary(min_size=0, max_size=4096),
    where=positions,
    mask=st.integers(min_value=1, max_value=255),
)
def test_a_changed_byte_anywhere_in_a_larger_envelope_is_detected(
    plaintext: bytes, where: float, mask: int
) -> None:
    data = encrypt_envelope(
        KEY, kind="data", key_id="v1", context=CONTEXT, plaintext=plaintext
    ).to_bytes()
    position = int(where * len(data))
    changed = bytearray(data)
    changed[position] ^= mask
    with pytest.raises(CryptoError):
        open_with({"v1": KEY}, bytes(changed), context=CONTEXT)


@given(cut=st.integers(min_value=0, max_value=60))
def test_a_cut_envelope_is_detected(cut: int) -> None:
    data = encrypt_envelope(
        KEY, kind="data", key_id="v1", context=CONTEXT, plaintext=b"0123456789"
    ).to_bytes()
    with pytest.raises(CryptoError):
        open_with({"v1": KEY}, data[: len(data) - 1 - cut], context=CONTEXT)


def test_base64_with_non_zero_trailing_bits_is_refused() -> None:
    # 1 byte -> 2 characters, of which the second carries 4 unused bits.
    text = encrypt_envelope(KEY, kind="data", key_id="v1", context={}, plaintext=b"").to_text()
    body = text[len(TEXT_PREFIX) :]
    assert len(body) % 4 in (2, 3)
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    last = alphabet.index(body[-1])
    sibling = alphabet[last ^ 1]  # same significant bits, different trailing bit
    with pytest.raises(MalformedEnvelope, match="canonical"):
        Envelope.from_text(text[:-1] + sibling)
    with pytest.raises(MalformedEnvelope):
        Envelope.from_text(text + "=" * (-len(body) % 4))


def test_a_context_in_non_canonical_order_is_refused() -> None:
    envelope = encrypt_envelope(
        KEY, kind="data", key_id="v1", context={"a": "1", "b": "2"}, plaintext=b""
    )
    data = envelope.to_bytes()
    swapped = data.replace(b"\x01a\x00\x011\x01b\x00\x012", b"\x01b\x00\x012\x01a\x00\x011")
    assert swapped != data
    with pytest.raises(MalformedEnvelope, match="canonical order"):
        Envelope.from_bytes(swapped)


def test_an_unknown_format_version_asks_for_an_upgrade() -> None:
    data = bytearray(
        encrypt_envelope(KEY, kind="data", key_id="v1", context={}, plaintext=b"").to_bytes()
    )
    data[4] = 2
    with pytest.raises(MalformedEnvelope, match="upgrade the operator"):
        Envelope.from_bytes(bytes(data))
    with pytest.raises(MalformedEnvelope, match="upgrade the operator"):
        Envelope.from_text("cleo:v2:AAAA")


def test_plaintext_put_where_an_envelope_belongs_is_not_echoed() -> None:
    with pytest.raises(MalformedEnvelope) as caught:
        Envelope.from_text("my-database-password-123")
    assert "my-database-password-123" not in str(caught.value)
    assert "cleo:v1:" in str(caught.value)


@pytest.mark.parametrize(
    "context",
    [{"1tenant": "x"}, {"": "x"}, {"tenant name": "x"}, {"t": "x" * 1025}],
)
def test_invalid_contexts_are_programming_errors(context: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="context field"):
        encrypt_envelope(KEY, kind="data", key_id="v1", context=context, plaintext=b"")


def test_keys_must_be_256_bit() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt_envelope(b"short", kind="data", key_id="v1", context={}, plaintext=b"")

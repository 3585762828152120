"""The error types: machine reasons for conditions, and no secret material in any text."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from cleo_operator.crypto import errors
from cleo_operator.crypto.errors import (
    CryptoError,
    InvalidKeyMaterial,
    MalformedEnvelope,
    Tampered,
    Truncated,
    UnknownKeyVersion,
    WrongContext,
)
from cleo_operator.crypto.kek import KeyEncryptionKeys, kek_from_secret_data
from cleo_operator.crypto.keyring import Keyring
from cleo_operator.crypto.sealing import SealingKeyring, seal, unseal
from cleo_operator.crypto.stream import EncryptingWriter, decrypt_stream
from tests.unit.crypto.secrets_check import assert_no_secret

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ALL_ERRORS: list[type[CryptoError]] = [
    CryptoError,
    WrongContext,
    UnknownKeyVersion,
    Tampered,
    Truncated,
    MalformedEnvelope,
    InvalidKeyMaterial,
]


def test_every_error_has_a_distinct_camel_case_reason() -> None:
    exported = {getattr(errors, name) for name in errors.__all__}
    assert exported == set(ALL_ERRORS)
    reasons = [error.reason for error in ALL_ERRORS]
    assert len(set(reasons)) == len(reasons)
    for error in ALL_ERRORS:
        assert issubclass(error, CryptoError)
        assert re.fullmatch(r"(?:[A-Z][a-z]+)+", error.reason), error
        assert error.reason == error.__name__


def test_truncation_is_a_kind_of_tampering() -> None:
    assert issubclass(Truncated, Tampered)


def test_errors_carry_their_message_and_extra_fields() -> None:
    wrong = WrongContext("made for tenant a", mismatched=("tenant",))
    assert wrong.message == str(wrong) == "made for tenant a"
    assert wrong.mismatched == ("tenant",)
    assert repr(wrong) == "WrongContext(reason='WrongContext', message='made for tenant a')"
    unknown = UnknownKeyVersion("no v3", key_id="v3")
    assert unknown.key_id == "v3"


def test_the_leak_check_itself_finds_a_leak() -> None:
    key = os.urandom(32)
    for spelling in (key.hex(), key.hex()[:20], repr(key)):
        with pytest.raises(AssertionError):
            assert_no_secret(f"error: {spelling}", key)


def _failures() -> list[tuple[CryptoError, list[bytes]]]:
    """Real failures of every kind, with the secrets that were in play."""
    caught: list[tuple[CryptoError, list[bytes]]] = []
    keyring = Keyring.generate(NOW)
    secret_value = os.urandom(24)
    envelope = keyring.encrypt(secret_value, context={"tenant": "a"})
    sealing = SealingKeyring.generate(NOW)
    sealed = seal(sealing.public_key, tenant="a", secret="s", key="k", plaintext=secret_value)
    keks = KeyEncryptionKeys.generate()
    in_play = [keyring.active.material, sealing.current.private_raw, keks.keys[0][1], secret_value]
    stream = io.BytesIO()
    with EncryptingWriter(stream, keyring.active.material, key_id="v1", chunk_size=4) as w:
        w.write(secret_value)
    attempts: list[Callable[[], object]] = [
        lambda: keyring.decrypt(envelope, context={"tenant": "b"}),
        lambda: keyring.decrypt(envelope[:-2] + "AA", context={"tenant": "a"}),
        lambda: Keyring.generate(NOW).decrypt(envelope, context={"tenant": "a"}),
        lambda: keyring.decrypt(keyring.rotate(NOW).encrypt(b"", context={}), context={}),
        lambda: keyring.decrypt("cleo:v1:!!", context={}),
        lambda: unseal(sealing, sealed, tenant="b", secret="s", key="k"),
        lambda: unseal(SealingKeyring.generate(NOW), sealed, tenant="a", secret="s", key="k"),
        lambda: keks.unwrap(keks.rotate().wrap(b"", context={}), context={}),
        lambda: kek_from_secret_data({"v1": keks.keys[0][1] + b"\n\n"}),
        lambda: Keyring.from_secret_data({**keyring.to_secret_data(), "v1.key": b"x" * 31}),
        lambda: decrypt_stream(
            io.BytesIO(stream.getvalue()[:-5]), io.BytesIO(), lambda _: keyring.active.material
        ),
        lambda: decrypt_stream(
            io.BytesIO(stream.getvalue()[:-20]), io.BytesIO(), lambda _: keyring.active.material
        ),
    ]
    for attempt in attempts:
        with pytest.raises(CryptoError) as error:
            attempt()
        caught.append((error.value, in_play))
    return caught


def test_no_error_message_or_repr_contains_secret_material() -> None:
    failures = _failures()
    kinds = {type(error) for error, _ in failures}
    assert kinds == {
        WrongContext,
        Tampered,
        UnknownKeyVersion,
        MalformedEnvelope,
        InvalidKeyMaterial,
        Truncated,
    }
    for error, secrets in failures:
        for text in (str(error), repr(error), error.message, error.reason):
            assert_no_secret(text, *secrets)
        # Messages say what to do, not only what went wrong.
        assert len(error.message) > 40
